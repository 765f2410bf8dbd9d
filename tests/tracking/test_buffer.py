"""The hit buffer: batches by size and time, keeps a batch the database refused, and makes new
hits wait when it is far behind instead of growing without end."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from mailer.tracking.buffer import HitBuffer
from mailer.tracking.hits import Hit

HIT = Hit("open", "m1", None, datetime(2026, 11, 23, tzinfo=UTC), "ua", "127.0.0.1", "GET")


def test_a_refused_batch_stays_for_the_next_try_and_nothing_is_lost() -> None:
    written: list[int] = []
    failures = [True]

    async def write(hits: Sequence[Hit]) -> int:
        if failures and failures.pop():
            raise RuntimeError("database is locked")
        written.append(len(hits))
        return len(hits)

    async def scenario() -> None:
        buffer = HitBuffer(write, size=10, every=60)
        for _ in range(3):
            buffer.add(HIT)
        await buffer.flush()  # refused
        assert len(buffer.waiting) == 3 and buffer.recorded == 0
        buffer.add(HIT)
        await buffer.close()  # written on the way out
        assert buffer.recorded == 4 and buffer.waiting == []

    asyncio.run(scenario())
    assert written == [4]


def test_new_hits_wait_while_the_buffer_is_far_behind() -> None:
    async def scenario() -> None:
        async def write(hits: Sequence[Hit]) -> int:
            await asyncio.sleep(0.01)  # the database takes a moment
            return len(hits)

        buffer = HitBuffer(write, size=2, every=60)
        writer = asyncio.create_task(buffer.run())
        for _ in range(buffer.high_water):
            buffer.add(HIT)
        waiting = asyncio.create_task(buffer.room())
        await asyncio.sleep(0)
        assert not waiting.done()  # full: the hit waits ...
        await asyncio.wait_for(waiting, 5)  # ... until the writer has written
        assert buffer.recorded == buffer.high_water
        await buffer.close()
        writer.cancel()

    asyncio.run(scenario())
