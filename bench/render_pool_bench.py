"""Benchmark: the CPU a render process spends per message, as `mailer run` uses it.

bench/render_bench.py times `MessageRenderer.render` alone; a render process of the daemon
also unpickles its chunk of jobs, turns each message into its wire form and pickles the
results back (delivery/rendering.py). This script starts the real `RenderPool` with one
process over the example project (settings.toml and templates, a new RSA-2048 DKIM key), hands
it chunks of jobs as the delivering process does (welcome step, A/B subject, six names in four
languages, like bench/send_bench.py), and reads the CPU time of the render process from /proc
before and after: everything the process does counts. The handing-over process's own CPU is
printed beside it (pickling the jobs, unpickling the results), and the RSA signature alone
(the part no change of ours can cut), so what is left to cut is plain.

    .venv/bin/python bench/render_pool_bench.py [--contacts 10000]

While it runs, `py-spy record --pid <the printed pid>` profiles the render process.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

from postfix import process_cpu_seconds
from scale_bench import signature_cpu
from send_bench import NAMES

from mailer.config import Settings, load_settings
from mailer.contacts.model import Contact
from mailer.delivery.rendering import CHUNK, Rendered, RenderJob, RenderPool
from mailer.workspace import create_dkim_key

ROOT = Path(__file__).resolve().parent.parent
SECRET = "mailer-bench-render-pool-secret-0123456789"
NOW = datetime(2026, 11, 17, 11, 2, tzinfo=UTC)
IN_FLIGHT = 2  # chunks handed over before the first is waited for: the process never idles


def project(workdir: Path) -> Settings:
    shutil.copy(ROOT / "settings.toml", workdir / "settings.toml")
    shutil.copytree(ROOT / "templates", workdir / "templates", dirs_exist_ok=True)
    environ = {"MAILER_SECRET_KEY": SECRET, "MAILER_DKIM__KEY_FILE": str(workdir / "dkim.key"),
               "MAILER_DKIM__ALGORITHM": "rsa-sha256",
               "MAILER_DELIVERY__RENDER_PROCESSES": "1"}  # fmt: skip
    settings = load_settings(workdir / "settings.toml", environ=environ)
    create_dkim_key(settings)
    return settings


def jobs(settings: Settings, count: int, first: int = 0) -> Iterator[RenderJob]:
    """The welcome campaign's first step, as the daemon queues it: half of it variant B."""
    step = settings.campaigns["welcome"].messages()[0]
    variants = [None, *step.variants]
    pick = random.Random(first)
    for number in range(first, first + count):
        first_name, last_name, locale = pick.choice(NAMES)
        contact = Contact(f"reader{number}@example.com", first_name, last_name, "UTC", locale,
                          {"orders": pick.randint(0, 9)}, ("newsletter",), number + 1)  # fmt: skip
        yield RenderJob(number + 1, f"bench-{number}", "welcome", step.name, contact,
                        variants[number % len(variants)])  # fmt: skip


def hand_over(pool: RenderPool, all_jobs: list[RenderJob]) -> int:
    """Every job through the pool, IN_FLIGHT chunks at a time; the messages rendered."""
    pending: list[Future[list[Rendered]]] = []
    rendered = 0
    for start in range(0, len(all_jobs), CHUNK):
        pending.append(pool.submit(all_jobs[start : start + CHUNK], NOW))
        if len(pending) >= IN_FLIGHT:
            rendered += _count(pending.pop(0).result())
    for future in pending:
        rendered += _count(future.result())
    return rendered


def _count(results: list[Rendered]) -> int:
    failed = [result.error for result in results if result.message is None]
    assert not failed, f"messages failed to render: {failed[:3]}"
    return len(results)


def run(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        settings = project(Path(directory))
        pool = RenderPool(settings)
        try:
            hand_over(pool, list(jobs(settings, 400, first=10**6)))  # warm-up: templates loaded
            processes = getattr(pool.executor, "_processes", None) or {}
            (pid,) = processes
            print(f"render process pid {pid}; {count:,} messages a round, chunks of {CHUNK}")
            for round_number in range(rounds):
                all_jobs = list(jobs(settings, count, first=round_number * count))
                render_before, own_before = process_cpu_seconds(pid), time.process_time()
                started = time.perf_counter()
                done = hand_over(pool, all_jobs)
                wall = time.perf_counter() - started
                render_cpu = process_cpu_seconds(pid) - render_before
                own_cpu = time.process_time() - own_before
                print(f"round {round_number + 1}: render process {render_cpu / done * 1e6:,.0f} "
                      f"µs CPU a message, handing-over process {own_cpu / done * 1e6:,.0f} µs; "
                      f"{done / wall:,.0f} messages/s")  # fmt: skip
        finally:
            pool.close()
        print(f"one RSA-2048 signature alone: {signature_cpu(settings):,.0f} µs CPU")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--contacts", type=int, default=10_000, help="messages a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each printed")
    args = parser.parse_args(argv)
    run(args.contacts, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
