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
    names: list[str] = []

    async def write(hits: Sequence[Hit], batch: str) -> int:
        names.append(batch)
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
        await buffer.close()  # written on the way out: the refused batch as it was, then the rest
        assert buffer.recorded == 4 and buffer.waiting == []

    asyncio.run(scenario())
    assert written == [3, 1]
    # Sent again under its name (its commit may have reached the database: store/once.py)
    assert names[0] == names[1] != names[2]


def test_new_hits_wait_while_the_buffer_is_far_behind() -> None:
    async def scenario() -> None:
        async def write(hits: Sequence[Hit], batch: str) -> int:
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
        assert buffer.recorded > 0 and len(buffer.waiting) + buffer.writing < buffer.high_water
        await buffer.close()
        writer.cancel()

    asyncio.run(scenario())


def numbered(count: int) -> list[Hit]:
    return [HIT._replace(message_key=f"m{n}") for n in range(count)]


def test_a_batch_handed_to_the_writer_is_at_most_largest_and_closing_writes_them_all() -> None:
    """A request held by back-pressure waits for a short write, not for all that waits; on
    the way out every hit is written, in order, a refused batch staying in front."""
    written: list[list[str]] = []
    refuse = [True, False]  # popped from the end: the second write is refused

    async def write(hits: Sequence[Hit], batch: str) -> int:
        if refuse and refuse.pop():
            raise RuntimeError("database is locked")
        written.append([hit.message_key for hit in hits])
        return len(hits)

    async def scenario() -> None:
        buffer = HitBuffer(write, size=6, every=60, largest=3)
        for hit in numbered(8):
            buffer.add(hit)
        await buffer.close()  # 3 written, then a refusal: the rest stays, in order
        assert [hit.message_key for hit in buffer.waiting] == [f"m{n}" for n in range(3, 8)]
        await buffer.close()
        assert buffer.recorded == 8 and buffer.waiting == []

    asyncio.run(scenario())
    assert written == [["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6", "m7"]]


def test_the_writer_keeps_writing_while_a_full_batch_waits() -> None:
    async def scenario() -> None:
        sizes: list[int] = []

        async def write(hits: Sequence[Hit], batch: str) -> int:
            sizes.append(len(hits))
            return len(hits)

        buffer = HitBuffer(write, size=6, every=60, largest=3)
        writer = asyncio.create_task(buffer.run())
        for hit in numbered(10):
            buffer.add(hit)
        for _ in range(1000):  # bounded: the writer task runs between these
            if len(buffer.waiting) < 2:
                break
            await asyncio.sleep(0)
        assert sizes == [3, 3, 3] and len(buffer.waiting) == 1  # the last waits for `every`
        await buffer.close()
        assert sizes == [3, 3, 3, 1]
        writer.cancel()

    asyncio.run(scenario())


def test_what_is_answered_but_not_written_never_passes_the_flush_size() -> None:
    """What a SIGKILL would lose: the hits waiting and the batch being written, together at
    most `size`, however fast requests come while a write is slow. A write starts at half
    of `size`, so requests are still answered while it runs."""
    unwritten: list[tuple[int, int]] = []  # (waiting, being written) after each answer
    writes: list[int] = []

    async def scenario() -> None:
        async def write(hits: Sequence[Hit], batch: str) -> int:
            writes.append(len(hits))
            await asyncio.sleep(0.02)  # a slow database
            return len(hits)

        buffer = HitBuffer(write, size=10, every=60)
        writer = asyncio.create_task(buffer.run())

        async def request(n: int) -> None:
            await buffer.room()
            buffer.add(HIT._replace(message_key=f"m{n}"))
            unwritten.append((len(buffer.waiting), buffer.writing))

        async def client(first: int) -> None:
            for n in range(first, first + 25):
                await request(n)
                await asyncio.sleep(0.001)  # a request a millisecond from each client

        await asyncio.gather(*(client(100 * c) for c in range(4)))
        assert max(waiting + writing for waiting, writing in unwritten) <= 10
        await buffer.close()
        await asyncio.wait_for(writer, 5)  # its write in flight ends, then it stops
        assert buffer.recorded == 100

    asyncio.run(scenario())
    assert max(writes) <= 10 and sum(writes) == 100
    assert any(writing and waiting for waiting, writing in unwritten)  # answered meanwhile


def test_while_writes_fail_the_writer_pauses_between_tries_though_hits_wait_for_room() -> None:
    calls: list[int] = []

    async def write(hits: Sequence[Hit], batch: str) -> int:
        calls.append(len(hits))
        raise RuntimeError("the database system is starting up")

    async def scenario() -> None:
        buffer = HitBuffer(write, size=2, every=60)
        for _ in range(buffer.high_water):
            buffer.add(HIT)
        waiting = asyncio.create_task(buffer.room())  # a pixel request waiting for room
        writer = asyncio.create_task(buffer.run())
        await asyncio.sleep(0.2)
        assert not waiting.done() and len(buffer.waiting) == buffer.high_water  # nothing lost
        writer.cancel()
        waiting.cancel()

    asyncio.run(scenario())
    assert len(calls) == 1  # one try, then the pause: not a try each time a request asks for room


def test_the_batch_being_written_is_counted_with_its_oldest_hit() -> None:
    """What /healthz reads of a write that has not ended: how many, and since when."""
    release = asyncio.Event()

    async def write(hits: Sequence[Hit], batch: str) -> int:
        await release.wait()  # the database is locked
        return len(hits)

    async def scenario() -> None:
        buffer = HitBuffer(write, size=10, every=60)
        later = HIT._replace(at=HIT.at.replace(minute=5))
        buffer.add(later)
        buffer.add(HIT)
        flushing = asyncio.create_task(buffer.flush())
        await asyncio.sleep(0)
        assert buffer.waiting == [] and buffer.writing == 2 and buffer.oldest_unwritten() == HIT.at
        release.set()
        assert await flushing
        assert buffer.writing == 0 and buffer.oldest_unwritten() is None

    asyncio.run(scenario())
