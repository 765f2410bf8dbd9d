"""Opens and clicks wait in memory and are written in batches, and on shutdown until none are
left. A batch that cannot be written stays in the buffer for the next try: nothing is dropped.

What a SIGKILL can lose is what was answered but not yet committed: the hits waiting and the
batch being written. `room` keeps the two together under `size` (flush_size): a pixel request
waits while they reach it, so a killed instance loses at most `size` hits (the crash test,
tests/crash/test_tracking_killed.py, counts them). So that answering need not stop while a
batch is written, a write starts when half of `size` waits (or `every` seconds after the
last), and the next half fills meanwhile. Clicks wait for room the same way. A batch holds at
most `largest` hits.

Each batch has a name; a failed batch is written again as it was, under its name, so that one
whose commit did reach the database is not stored twice (store/once.py, writer.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from mailer.logs import logger
from mailer.tracking.hits import Hit

# Seconds between writes while they fail (the database restarting): not again at once, as the
# requests waiting for room would ask (a restart of 0.4 s logged 30-odd failed writes).
AWAY_PAUSE = 0.5
LARGEST = 2_000  # hits in one write at most (and half of `size`): the writer needs ~0.1 s


class HitBuffer:
    def __init__(self, write: Callable[[Sequence[Hit], str], Awaitable[int]], size: int,
                 every: float, largest: int = LARGEST) -> None:  # fmt: skip
        self.write = write
        self.size = size
        self.half = max(1, size // 2)  # waiting: a write starts
        self.largest = min(largest, self.half)  # so that the other half can fill meanwhile
        self.every = every
        self.waiting: list[Hit] = []
        self.recorded = 0  # hits written, for /metrics
        self.flushes = 0
        self.last_flush_seconds = 0.0
        self.failed_writes = 0  # for /metrics
        self.last_failure: str | None = None  # why the last write failed, for /healthz
        self._full = asyncio.Event()
        self._written = asyncio.Event()  # set after each write; a new one for the next
        self.writing = 0  # hits of the batch being written
        self.in_flight: Sequence[Hit] = ()  # that batch, for /healthz (oldest_unwritten)
        self.high_water = size  # this many waiting or being written: new hits wait
        self._closing = False
        self._lock = asyncio.Lock()  # one write at a time
        self.failed: tuple[str, int] | None = None  # the name and size of a batch that failed

    def full(self) -> bool:
        """Whether `room` would wait (asked first on the hot path: no coroutine when not)."""
        return len(self.waiting) + self.writing >= self.high_water and not self._closing

    async def room(self) -> None:
        """Wait while `high_water` hits are waiting or being written: back-pressure instead of
        unbounded memory, and the bound on what a SIGKILL loses. (Nothing may be awaited
        between this and `add`.)"""
        while self.full():
            written = self._written
            self._full.set()
            await written.wait()

    def oldest_unwritten(self) -> datetime | None:
        """When the oldest hit answered and not yet written happened: waiting, or in a write
        that has not ended (asked by /healthz, not on the hot path)."""
        since = [hit.at for hit in self.in_flight]
        if self.waiting:
            since.append(self.waiting[0].at)
        return min(since, default=None)

    def add(self, hit: Hit) -> None:
        self.waiting.append(hit)
        if len(self.waiting) >= self.half:
            self._full.set()

    async def run(self) -> None:
        """Write batches until `close`."""
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.every)
            self._full.clear()
            if not await self.flush():  # the database is away: pause, whoever waits for room
                await asyncio.sleep(min(self.every, AWAY_PAUSE))

    async def flush(self) -> bool:
        """Write the first `largest` hits waiting; False if the write failed (they stay, and
        are written again as the same batch)."""
        async with self._lock:
            name, size = self.failed or (uuid.uuid4().hex, self.largest)
            batch, self.waiting = self.waiting[:size], self.waiting[size:]
            if not batch:
                return True
            started = time.perf_counter()
            self.writing, self.in_flight = len(batch), batch
            try:
                self.recorded += await self.write(batch, name)
            except Exception as error:  # the database is away: the batch stays for next try
                self.writing, self.in_flight = 0, ()
                logger.exception("cannot write opens and clicks; keeping them for the next try")
                self.failed_writes += 1
                self.last_failure = f"{type(error).__name__}: {error}".split("\n")[0][:200]
                self.waiting[:0] = batch
                self.failed = (name, len(batch))
                self._wake_writers_waiting()
                return False
            self.writing, self.in_flight, self.failed = 0, (), None
            self.flushes += 1
            self.last_failure = None
            self.last_flush_seconds = time.perf_counter() - started
            if len(self.waiting) >= self.half:
                self._full.set()  # a batch is waiting already: no pause before it
            self._wake_writers_waiting()
            return True

    def _wake_writers_waiting(self) -> None:
        self._written.set()
        self._written = asyncio.Event()

    async def close(self) -> None:
        """Write everything waiting, batch after batch, until a write fails (what it held
        stays waiting)."""
        self._closing = True
        self._full.set()
        while self.waiting and await self.flush():
            pass
