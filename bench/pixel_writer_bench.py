"""Benchmark: the event writer alone (`record_hits`), CPU time per open, over batches shaped
like `bench/tracking_bench.py`'s pixel run: two walkers over --messages sent messages, one
open each step, --rate opens a second in all, --batch opens a batch (the buffer's cap), one
writer keeping a `recording.Memory` across batches as the writer process does
(--no-memory: without it). Before the opens, --clicks clicks of link 0 are written the same
way, as tracking_bench.py's click run writes them just before its pixel run: the opens then
find a message's person's clicks in the rules' reach (--clicks 0: none). The mean of the
second half of the open batches is printed (the first half fills the rules' reach);
--profile prints cProfile's top functions of that half.

    .venv/bin/python bench/pixel_writer_bench.py [--messages 10000] [--batches 60]
        [--batch 2000] [--rate 12000] [--clicks 60000] [--database sqlite|postgresql]
        [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from databases import database
from sqlalchemy import select
from tracking_bench import SENT_AT, USER_AGENT, kinds_recorded, project, sent_messages

from mailer.store.tables import events
from mailer.tracking.hits import Hit
from mailer.tracking.recording import Memory, record_hits
from mailer.workspace import Workspace

FIRST = SENT_AT + timedelta(minutes=10)
CLICK_RATE = 6_000  # clicks a second, about what tracking_bench.py's click run sends


def batches(ids: list[int], count: int, size: int, rate: float, kind: str = "open",
            first: datetime = FIRST) -> list[list[Hit]]:  # fmt: skip
    """Two walkers' opens (or clicks of link 0), interleaved as wrk's two threads send them,
    cut into batches."""
    walkers, step = [0, 7919 % len(ids)], timedelta(seconds=1 / rate)
    link = 0 if kind == "click" else None
    found: list[list[Hit]] = []
    n = 0
    for _ in range(count):
        batch = []
        for _ in range(size):
            walker = n % 2
            message = ids[walkers[walker] % len(ids)]
            walkers[walker] += 1
            batch.append(Hit(kind, f"m{message}", link, first + n * step, USER_AGENT,  # type: ignore[arg-type]
                             f"198.51.100.{n % 200}", "GET"))  # fmt: skip
            n += 1
        found.append(batch)
    return found


def run(kind: str, messages: int, count: int, size: int, rate: float, profiling: bool,
        remembering: bool, clicks: int) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pixel-writer-") as name, \
            database(kind, Path(name), "writer") as url:  # fmt: skip
        settings, _ = project(Path(name), url)
        ids = sent_messages(settings, Path(name), messages)
        workspace = Workspace(settings)
        opening = FIRST + timedelta(seconds=clicks / CLICK_RATE + 1)  # as after wrk's click run
        work = batches(ids, count, size, rate, first=opening)
        for batch in batches(ids, -(-clicks // size), size, CLICK_RATE, "click", FIRST):
            with workspace.engine.begin() as connection:
                record_hits(connection, settings, workspace.key, batch)
        seconds: list[float] = []
        profiler = cProfile.Profile(time.process_time)  # CPU, not wall-clock
        memory = Memory() if remembering else None
        for number, batch in enumerate(work):
            measured = profiling and number >= count // 2
            if measured:
                profiler.enable()
            started = time.process_time()
            with workspace.engine.begin() as connection:
                record_hits(connection, settings, workspace.key, batch, memory)
            if memory is not None:
                memory.keep()
            seconds.append(time.process_time() - started)
            if measured:
                profiler.disable()
        with workspace.engine.connect() as connection:
            kinds = kinds_recorded(connection)
            reasons = Counter(connection.scalars(
                select(events.c.properties["machine"].as_string())
                .where(events.c.kind == "machine_open")))  # fmt: skip
        workspace.close()
    half = seconds[count // 2 :]
    print(f"{kind}, {'with' if remembering else 'without'} the writer's memory, after "
          f"{clicks:,} clicks: {count} "
          f"batches of {size} opens over {messages:,} messages at "
          f"{rate:,.0f}/s: {sum(half) * 1e6 / (len(half) * size):.1f} µs CPU an open "
          f"(second half; first half {sum(seconds[: count // 2]) * 1e6 / (count // 2 * size):.1f})"
          f"; stored {dict(kinds)}")  # fmt: skip
    print("  machine reasons: " + ", ".join(
        f"{reason.split(' s ')[0] if reason else reason!r} x{n}"
        for reason, n in Counter(r.split(" s ")[0] if r else r for r in reasons.elements())
        .most_common(5)))  # fmt: skip
    if profiling:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=12_000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--clicks", type=int, default=60_000, help="clicks written first")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="record_hits without Memory")
    options = parser.parse_args(argv)
    run(options.database, options.messages, options.batches, options.batch, options.rate,
        options.profile, not options.no_memory, options.clicks)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
