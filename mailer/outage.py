"""Saying that the database is away, without a traceback every second.

`mailer run`'s delivery loop tries again every poll (a second or so) and its ticks every
minute: a database restarted or unreachable for five minutes would otherwise fill the log with
hundreds of identical tracebacks. One warning when it stops answering, one a minute while it
stays away, and one when it answers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.exc import OperationalError

from mailer.logs import logger

REPEAT_EVERY = 60.0  # seconds between two warnings of one outage


class Outage:
    """The state of one loop's database outage (`what`: "delivery", "tick")."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.clock = clock
        self.since: float | None = None  # when the database stopped answering, if it has
        self.said_at = 0.0
        self.failures = 0

    def failed(self, error: OperationalError) -> None:
        """A try that the database did not answer: a warning now and then, never a traceback."""
        now = self.clock()
        if self.since is None:  # a new outage: said at once
            self.since, self.said_at, self.failures = now, now - REPEAT_EVERY, 0
        self.failures += 1
        if now - self.said_at < REPEAT_EVERY:
            return
        self.said_at = now
        reason = str(error.orig or error).strip().partition("\n")[0]
        logger.warning("%s waits for the database: %s (%d tries in %.0f s; trying again)",
                       self.what, reason, self.failures, now - self.since)  # fmt: skip

    def answered(self) -> None:
        """A try that went through: the end of the outage, said once."""
        if self.since is not None:
            logger.warning("%s: the database answers again after %.0f s (%d tries failed)",
                           self.what, self.clock() - self.since, self.failures)  # fmt: skip
            self.since = None
