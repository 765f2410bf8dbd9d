"""Benchmark: where a relay session's time goes, per message: its SMTP transaction, and the wait
for its result's commit before its next message (the one-repeat-per-connection bound).

One delivery process as scale_bench.py runs it (render processes, 10 sessions, smtp-sink), on
SQLite or on a fresh PostgreSQL database. The session's two parts are timed by wrapping
RelaySession.send and ResultWriter.write in the delivering process (before it forks), so the
figures are wall time as the sessions see it, beside the process's CPU per message. The commit
wait is split again: queued in the writer (its linger, its commit lanes busy) and in the commit
of the result's group (the hand-off to a thread, the round trips, the server's WAL flush).

    make bench-tools
    .venv/bin/python bench/session_waits.py [--database sqlite|postgresql] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from databases import DEFAULT_POSTGRES_URL
from postfix import require_postfix
from scale_bench import deliver_with, postgres_database, prepare

from mailer.delivery.relay import RelaySession
from mailer.delivery.worker import Deliverer, DeliveryReport
from mailer.delivery.writer import ResultWriter

SPENT = {"send": 0.0, "commit": 0.0, "queued": 0.0, "committing": 0.0}
ENQUEUED: dict[int, float] = {}  # a session's result (by id) -> when it reached the writer


def noting_queue(enqueue: Callable[..., None]) -> Callable[..., None]:
    """ResultWriter._enqueue, noting when a result a session waits for reached the writer."""

    def wrapper(writer: ResultWriter, result: Any, done: Any) -> None:
        if done is not None:
            ENQUEUED[id(result)] = time.perf_counter()
        enqueue(writer, result, done)

    return wrapper


def noting_commit(commit: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Any]:
    """ResultWriter._commit, splitting each waiting session's wait in two: queued (the linger,
    a commit lane busy) and in its group's commit (the thread hand-off, the round trips)."""

    async def wrapper(writer: ResultWriter, batch: list[tuple[Any, Any]]) -> None:
        started = time.perf_counter()
        await commit(writer, batch)
        ended = time.perf_counter()
        for result, done in batch:
            if done is not None:
                SPENT["queued"] += started - ENQUEUED.pop(id(result), started)
                SPENT["committing"] += ended - started

    return wrapper


def timed(name: str, method: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started

    return wrapper


def noting_spent(deliver: Callable[..., DeliveryReport]) -> Callable[..., DeliveryReport]:
    """Deliverer.deliver, then what its sessions spent written where SESSION_WAITS_FILE says
    (it runs in scale_bench's delivery process, a child)."""

    def wrapper(*args: Any, **kwargs: Any) -> DeliveryReport:
        SPENT.update(dict.fromkeys(SPENT, 0.0))
        report = deliver(*args, **kwargs)
        Path(os.environ["SESSION_WAITS_FILE"]).write_text(" ".join(map(str, SPENT.values())))
        return report

    return wrapper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--postgres-url", default=os.environ.get("MAILER_TEST_DATABASE_URL")
                        or DEFAULT_POSTGRES_URL)  # fmt: skip
    arguments = parser.parse_args(argv)
    require_postfix()
    RelaySession.send = timed("send", RelaySession.send)  # type: ignore[method-assign]
    ResultWriter.write = timed("commit", ResultWriter.write)  # type: ignore[method-assign]
    Deliverer.deliver = noting_spent(Deliverer.deliver)  # type: ignore[method-assign]
    ResultWriter._enqueue = noting_queue(ResultWriter._enqueue)  # type: ignore[method-assign]
    ResultWriter._commit = noting_commit(ResultWriter._commit)  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="session-waits-") as folder:
        if arguments.database == "postgresql":
            with postgres_database(arguments.postgres_url) as (url, name):
                runs(arguments, Path(folder), url, name)
        else:
            runs(arguments, Path(folder), f"sqlite:///{folder}/bench.db", None)
    return 0


def runs(arguments: argparse.Namespace, folder: Path, url: str, database: str | None) -> None:
    project = prepare(folder / "project", url, database, arguments.contacts, arguments.sessions,
                      2, "rsa-sha256")  # fmt: skip
    for number in range(arguments.runs):
        with tempfile.TemporaryDirectory() as spent_folder:
            spent_file = Path(spent_folder) / "spent"
            os.environ["SESSION_WAITS_FILE"] = str(spent_file)
            run = deliver_with(project.settings, url, arguments.database, 1, database)
            send, commit, queued, committing = (float(x) for x in spent_file.read_text().split())
        elsewhere = arguments.sessions * run.seconds - send - commit
        cpu = {"delivering": run.mailer_cpu, "render": run.render_cpu, "sink": run.sink_cpu,
               "pg": run.server_cpu}  # fmt: skip
        print(f"run {number + 1}: {run.rate:,.0f} msgs/s; per message: session in SMTP "
              f"{run.per_message(send):,.0f} µs, waiting for its commit "
              f"{run.per_message(commit):,.0f} µs (queued {run.per_message(queued):,.0f}, in its "
              f"commit {run.per_message(committing):,.0f}), elsewhere "
              f"{run.per_message(elsewhere):,.0f} "
              f"µs (wall, summed over {arguments.sessions} sessions); CPU µs: "
              + ", ".join(f"{name} {run.per_message(spent):.0f}" for name, spent in cpu.items()),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
