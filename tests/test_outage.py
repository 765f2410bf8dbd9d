"""`mailer run` says that the database is away once, then once a minute, then when it answers
again: not a traceback at every try (mailer/outage.py). The clock is injected."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from mailer.outage import REPEAT_EVERY, Outage

REFUSED = OperationalError(
    "SELECT 1", None,
    Exception('connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
              "\tIs the server running on that host?"),
)  # fmt: skip


def test_an_outage_is_said_once_a_minute_without_a_traceback_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = Outage("delivery", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="mailer"):
        for second in range(int(REPEAT_EVERY) + 2):  # a try a second for 62 s
            now[0] = 100.0 + second
            outage.failed(REFUSED)
        outage.answered()
        outage.answered()  # no outage: nothing more
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        'delivery waits for the database: connection to server at "127.0.0.1", port 5432 '
        "failed: Connection refused (1 tries in 0 s; trying again)",
        'delivery waits for the database: connection to server at "127.0.0.1", port 5432 '
        "failed: Connection refused (61 tries in 60 s; trying again)",
        "delivery: the database answers again after 61 s (62 tries failed)",
    ]
    assert all(record.exc_info is None for record in caplog.records)


def test_a_second_outage_starts_its_own_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = Outage("the tick", clock=lambda: now[0])
    outage.failed(REFUSED)
    outage.answered()
    now[0] = 10.0
    with caplog.at_level(logging.WARNING, logger="mailer"):
        outage.failed(REFUSED)
    assert "(1 tries in 0 s; trying again)" in caplog.text
