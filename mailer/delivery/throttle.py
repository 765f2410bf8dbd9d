"""Rate limits that hold across every `mailer run`: one budget for all messages, one per
recipient domain, each a token bucket in the database (store/limits.py), refilled at its rate
on the injected clock, with a second's worth of burst.

A process takes tokens in chunks (a tenth of a second's worth, at least one: one round trip per
chunk, not per message) and spends them from memory. The database never grants more than a
bucket holds, so the only excess is tokens a process took before an interval and spends in it:
over any interval of T seconds, at most burst + rate × T + processes × chunk messages go out.
A chunk a process cannot spend (no more mail for that domain) is lost, never sent twice.
Daemons set to different rates share the bucket at the lowest of them (store/limits.py); the
others log a warning saying so, once per bucket and rate.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from mailer.logs import logger
from mailer.metrics import RATE_HELD, RATE_HOLDS, RATE_WAITED
from mailer.store.limits import Limit, SharedLimits, Taken

SHORT_WAIT = 1.0  # a token at most this far away is waited for in line; further, back it goes
CHUNK_SECONDS = 0.1  # a process takes this many seconds' worth of tokens a round trip


@dataclass(frozen=True)
class Budget:
    bucket: str  # its row in shared_limits: "send", or "send:gmail.com"
    limit: Limit
    chunk: int  # tokens taken a round trip
    reason: str  # why a message waits for it, as the outbox shows it


def budget(bucket: str, rate: float, reason: str) -> Budget:
    # A second's worth of burst (at least one message): smooth, yet no idle first second.
    limit = Limit(rate, max(1.0, rate))
    chunk = max(1, min(math.floor(limit.burst), math.ceil(rate * CHUNK_SECONDS)))
    return Budget(bucket, limit, chunk, reason)


@dataclass(frozen=True)
class Hold:
    """A message over a rate: back to the outbox until `until`."""

    until: datetime
    budget: Budget  # the one without a token

    @property
    def reason(self) -> str:
        return self.budget.reason


class Throttle:
    """The global limit and the per-domain limits of settings [delivery], for one process."""

    def __init__(self, engine: Engine, rate: float | None,
                 domain_rates: Mapping[str, float]) -> None:  # fmt: skip
        self.limits = SharedLimits(engine)
        self.overall = budget("send", rate, "rate limit") if rate else None
        self.domains = {domain.lower(): budget(f"send:{domain.lower()}", r,
                                               f"rate limit for {domain.lower()}")
                        for domain, r in domain_rates.items()}  # fmt: skip
        self.tokens: dict[str, int] = {}  # taken from the database, not spent yet
        self.empty_until: dict[str, float] = {}  # epoch seconds: no token before then
        self.stalled: datetime | None = None  # a time the clock stood still at while we waited
        self.overruled: set[tuple[str, float]] = set()  # (bucket, rate) warned of
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def budgets(self, recipient: str) -> list[Budget]:
        domain = self.domains.get(recipient.rpartition("@")[2].lower())
        return [b for b in (domain, self.overall) if b is not None]

    async def admit(self, recipient: str, clock: Callable[[], datetime]) -> Hold | None:
        """None once a token of each of the recipient's budgets is taken (send now). A Hold
        when the next token is further than SHORT_WAIT away, or the clock stands still (a
        frozen clock never refills a bucket); a shorter wait is waited here, in line (the
        lock is first come, first served), as often as it takes."""
        budgets = self.budgets(recipient)
        now = clock()
        while budgets and (hold := await self._take(budgets, now)) is not None:
            if (hold.until - now).total_seconds() > SHORT_WAIT or now == self.stalled:
                RATE_HOLDS.labels(hold.budget.bucket).inc()
                return hold
            waited = (hold.until - now).total_seconds()
            RATE_WAITED.labels(hold.budget.bucket).inc(waited)
            await asyncio.sleep(waited)
            if (later := clock()) == now:
                self.stalled = now
            now = later
        return None

    async def _take(self, budgets: list[Budget], now: datetime) -> Hold | None:
        """A token of each budget, or the Hold of the first that has none."""
        epoch = now.timestamp()
        async with self._lock_of_loop():  # one round trip at a time: a chunk is all it holds
            missing = {b.bucket: (b.limit, b.chunk) for b in budgets
                       if not self.tokens.get(b.bucket)
                       and self.empty_until.get(b.bucket, -math.inf) <= epoch}  # fmt: skip
            if missing:
                taken = await asyncio.to_thread(self.limits.take, missing, epoch)
                for b in budgets:
                    if (got := taken.get(b.bucket)) is None:
                        continue
                    self._held_to(b, got)
                    self.tokens[b.bucket] = self.tokens.get(b.bucket, 0) + got.granted
                    if not got.granted:
                        self.empty_until[b.bucket] = epoch + got.wait
            empty = [b for b in budgets if not self.tokens.get(b.bucket)]
            if empty:
                wait = max(self.empty_until.get(b.bucket, epoch) - epoch for b in empty)
                return Hold(now + timedelta(seconds=wait), empty[0])
            for b in budgets:
                self.tokens[b.bucket] -= 1
            return None

    def _held_to(self, budget: Budget, taken: Taken) -> None:
        """The rate the bucket held at (/metrics), and a warning the first time another
        process holds it lower than this one's settings."""
        RATE_HELD.labels(budget.bucket).set(taken.rate)
        if taken.rate >= budget.limit.rate or (budget.bucket, taken.rate) in self.overruled:
            return
        self.overruled.add((budget.bucket, taken.rate))
        logger.warning(
            "%s: this process is set to %g/s, but another process on this database to %g/s; "
            "the lower rate holds for both while they disagree: give every daemon the same "
            "[delivery] rate and domain_rates",
            budget.reason, budget.limit.rate, taken.rate,
        )  # fmt: skip

    def _lock_of_loop(self) -> asyncio.Lock:
        """A lock of the running loop (each `deliver` runs its own)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]
