"""The clock, injected everywhere so that "two days later" is a test, not a wait.

Every command reads the time from its workspace's clock. `MAILER_NOW` (or `--now` of `mailer
run` and `mailer serve`) starts that clock at a given instant, from which it runs at the real
pace: a daemon started in a test lives on the test's date, whatever the wall clock says.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from mailer.errors import MailerError

NOW_VARIABLE = "MAILER_NOW"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to (tests, `mailer tick --now`)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def advance(self, by: timedelta) -> None:
        self._at += by


class StartedClock:
    """A clock set to `at` when made, then running at the real pace (measured on the monotonic
    clock, so neither a wall-clock jump nor faketime moves it twice)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("StartedClock needs a timezone-aware datetime")
        self._at = at.astimezone(UTC)
        self._started = time.monotonic()

    def now(self) -> datetime:
        return self._at + timedelta(seconds=time.monotonic() - self._started)


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time; UTC when it names no offset. ValueError when it is not one."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def clock_from_environment(environ: dict[str, str] | None = None) -> Clock:
    """The system clock, or a clock started at `MAILER_NOW` when that variable is set."""
    text = (os.environ if environ is None else environ).get(NOW_VARIABLE, "").strip()
    if not text:
        return SystemClock()
    try:
        return StartedClock(parse_moment(text))
    except ValueError:
        raise MailerError(
            f"{NOW_VARIABLE}='{text}' is not an ISO time: write e.g. 2026-11-23T09:00Z, "
            f"or unset it to use the system clock"
        ) from None
