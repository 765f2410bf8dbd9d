"""Logs: one line per event, readable by people, or one JSON object a line (`--log-json`) for
log collectors."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("mailer")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the call passed in `extra`: every attribute a bare log record does not have."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **fields,
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        details = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        moment = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        line = f"{moment} {record.levelname.lower():7} {record.getMessage()} {details}".rstrip()
        return line + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


class Brief(logging.Formatter):
    """For a command typed by hand: one line a problem, its error on the same line, no
    traceback (`--debug` shows it)."""

    def format(self, record: logging.LogRecord) -> str:
        details = "".join(f" {key}={value}" for key, value in _fields(record).items())
        error = record.exc_info[1] if record.exc_info else None
        cause = f": {' '.join(str(error).split()) or type(error).__name__}" if error else ""
        return f"mailer: {record.levelname.lower()}: {record.getMessage()}{details}{cause}"


def configure(json_lines: bool) -> None:
    """Logs of the daemon (`mailer run`): every event, one line (or JSON object) each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if json_lines else Plain())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # The scheduler's own warnings (a tick skipped because the last one still runs) go out
    # the same way: under --log-json every line on stderr is a JSON object.
    scheduler = logging.getLogger("apscheduler")
    scheduler.handlers[:] = [handler]
    scheduler.setLevel(logging.WARNING)
    scheduler.propagate = False


@contextmanager
def brief_logs(debug: bool = False) -> Iterator[None]:
    """While a one-off command runs (`mailer tick`): its warnings and errors on stderr, one line
    each (with `debug`, the traceback too); removed again when it ends."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Plain() if debug else Brief())
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
