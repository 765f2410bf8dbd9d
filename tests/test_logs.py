"""The daemon's logs (`mailer run`): one line per event, or one JSON object a line under
--log-json, the scheduler's own warnings included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from mailer.logs import configure, logger


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    """configure() is the daemon's, for its whole life: put the loggers back for other tests."""
    loggers = [logger, logging.getLogger("apscheduler")]
    saved = [(each.handlers[:], each.level, each.propagate) for each in loggers]
    yield
    for each, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        each.handlers[:], each.level, each.propagate = handlers, level, propagate


def test_under_log_json_every_line_is_json_the_schedulers_warnings_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(json_lines=True)
    logger.info("delivered", extra={"sent": 3})
    logging.getLogger("apscheduler.executors.default").warning(
        'Execution of job "tick" skipped: maximum number of running instances reached (1)'
    )
    logging.getLogger("apscheduler.scheduler").info("Added job")  # below warning: not shown
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["level"], line["event"][:22]) for line in lines] == [
        ("info", "delivered"), ("warning", 'Execution of job "tick')]  # fmt: skip
    assert lines[0]["sent"] == 3
