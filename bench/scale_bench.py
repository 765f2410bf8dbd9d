"""Benchmark: several `mailer run`-like delivery processes on one PostgreSQL, into smtp-sink.

In one run, and again for each `--repeat`: 1, 2 and 3 delivery processes on PostgreSQL (a
database of the bench's own, created and dropped), 1 on SQLite, and Postfix's `smtp-source`
pushing one of mailer's messages into a fresh smtp-sink (the reference). Each configuration
delivers the same queued messages (the outbox is put back to `queued` between runs), each
process with its own render processes and SMTP sessions, as `mailer run` has them.

Beside messages per second it prints where the CPU goes, per message: the delivering
processes, their render processes, smtp-sink, and the PostgreSQL server (the backends serving
the bench's database, read from /proc/PID/stat, plus the server's background processes:
WAL writer, checkpointer, ...), and how many statements a delivering process sends per message.
The server runs on this machine and shares its cores, so its CPU counts against the same
budget as mailer's: 2 cores give 2,000,000 µs a second.

    make bench-tools   # installs Postfix's smtp-sink and smtp-source (never the daemon)
    .venv/bin/python bench/scale_bench.py [--contacts 20000] [--repeat 2]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any, get_args

from databases import DEFAULT_POSTGRES_URL
from postfix import SmtpSink, process_cpu_seconds, require_postfix, smtp_source_run
from send_bench import START, project, sample_message, set_up, write_contacts
from sqlalchemy import Connection, Values, cast, column, create_engine, event, text, true, update
from sqlalchemy.engine import make_url

from mailer.clock import FrozenClock
from mailer.config import Settings
from mailer.delivery import claims
from mailer.delivery.claims import Result, _values, finish
from mailer.delivery.rendering import RenderPool
from mailer.delivery.worker import Deliverer
from mailer.render.dkim import Algorithm, load_key
from mailer.store.tables import outbox
from mailer.workspace import Workspace

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# PostgreSQL's own processes, shared by every database on the server (titles as `ps` shows).
BACKGROUND = ("walwriter", "checkpointer", "background writer", "autovacuum",
              "logical replication", "stats")  # fmt: skip


@contextmanager
def postgres_database(server: str) -> Iterator[tuple[str, str]]:
    """A fresh database on the server of `server` (a URL), dropped afterwards: its URL, name."""
    name = f"bench_scale_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False), name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_cpu(database: str) -> tuple[dict[int, float], float]:
    """CPU seconds so far of each backend serving `database` (by pid), and of the server's
    background processes together."""
    backends: dict[int, float] = {}
    background = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith("postgres: "):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        # "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE" (Debian names the cluster)
        if f" {database} " in title:
            backends[int(entry.name)] = cpu
        elif any(name in title for name in BACKGROUND):
            background += cpu
    return backends, background


class ServerWatch:
    """The PostgreSQL server's CPU spent between `start` and `stop` on one database, sampled
    every 0.1 s so a backend that ends before `stop` still counts up to its last sample."""

    def __init__(self, database: str | None) -> None:
        self.database = database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.background = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.database is None:
            return
        self.first, self.background = postgres_cpu(self.database)
        self.background = -self.background
        self.last = dict(self.first)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            assert self.database is not None
            self.last.update(postgres_cpu(self.database)[0])
            time.sleep(0.1)

    def stop(self) -> tuple[float, float]:
        """CPU seconds of the database's backends, and of the server's background processes."""
        if self.database is None or self._thread is None:
            return 0.0, 0.0
        self._stop.set()
        self._thread.join()
        backends, background = postgres_cpu(self.database)
        self.last.update(backends)
        spent = sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())
        return spent, self.background + background


@dataclass
class ProcessResult:
    sent: int
    cpu: float  # the delivering process
    render_cpu: float  # its render processes
    statements: int  # statements (an executemany counts once) the delivering process sent


def delivery_process(settings: Settings, start: Barrier, finish: Event,
                     results: Any) -> None:  # fmt: skip
    """One `mailer run`'s delivery: render processes started, then (all together) deliver
    everything due; waits with its connections open until the server's CPU has been read."""
    workspace = Workspace(settings, FrozenClock(START + timedelta(minutes=2)))
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(workspace.engine, "before_cursor_execute", count)
    # The result writer's commits on PostgreSQL go to the driver around SQLAlchemy (one round
    # trip each, store/one_trip.py): their statements are counted here, an executemany once.
    in_one_trip = claims.write_in_one_trip

    def counted_one_trip(connection: Connection, work: Any) -> int:
        nonlocal statements
        statements += len(work)
        return in_one_trip(connection, work)

    claims.write_in_one_trip = counted_one_trip
    deliverer = Deliverer(workspace)
    deliverer.pool = RenderPool(settings)
    processes = max(settings.delivery.render_processes, 1)
    for future in [deliverer.pool.executor.submit(os.getpid) for _ in range(4 * processes)]:
        future.result()  # every render process started and its renderer made
    renderers = list(getattr(deliverer.pool.executor, "_processes", None) or {})
    start.wait()
    cpu, render_cpu, before = time.process_time(), 0.0, statements
    render_before = {pid: process_cpu_seconds(pid) for pid in renderers}
    report = deliverer.deliver()
    cpu = time.process_time() - cpu
    render_cpu = sum(process_cpu_seconds(pid) - render_before[pid] for pid in renderers)
    results.put(ProcessResult(report.sent, cpu, render_cpu, statements - before))
    finish.wait()
    deliverer.close()
    workspace.close()


@dataclass
class Run:
    label: str
    processes: int
    sent: int = 0
    seconds: float = 0.0
    mailer_cpu: float = 0.0
    render_cpu: float = 0.0
    sink_cpu: float = 0.0
    server_cpu: float = 0.0  # the bench database's backends
    background_cpu: float = 0.0  # the server's shared processes
    statements: int = 0
    delivered: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def per_message(self, seconds: float) -> float:
        return seconds * 1e6 / max(self.sent, 1)

    @property
    def total_cpu(self) -> float:
        return (self.mailer_cpu + self.render_cpu + self.sink_cpu + self.server_cpu
                + self.background_cpu)  # fmt: skip


def reset_outbox(url: str) -> None:
    """Every message queued again, as before its first attempt; the table's statistics fresh."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(
            "UPDATE outbox SET status = 'queued', attempts = 0, send_after = :at, "
            "lease_owner = NULL, sent_at = NULL, reply = NULL, reason = NULL"
        ), {"at": START})  # fmt: skip
        if engine.dialect.name == "postgresql":
            connection.execute(text("VACUUM ANALYZE outbox"))
    engine.dispose()


def deliver_with(settings: Settings, url: str, label: str, processes: int,
                 database: str | None) -> Run:  # fmt: skip
    """Deliver the queued outbox with `processes` delivery processes into a fresh smtp-sink."""
    reset_outbox(url)
    run = Run(label, processes)
    context = multiprocessing.get_context("fork")
    with SmtpSink() as sink:
        smtp = settings.smtp.model_copy(update={"port": sink.port})
        ours = settings.model_copy(update={"smtp": smtp})
        start, finish, results = context.Barrier(processes + 1), context.Event(), context.Queue()
        children = [context.Process(target=delivery_process, args=(ours, start, finish, results))
                    for _ in range(processes)]  # fmt: skip
        for child in children:
            child.start()
        watch = ServerWatch(database)
        start.wait()  # every process ready: go
        sink_cpu = sink.cpu_seconds()
        watch.start()
        began = time.perf_counter()
        done = [results.get() for _ in children]
        run.seconds = time.perf_counter() - began
        run.server_cpu, run.background_cpu = watch.stop()
        run.sink_cpu = sink.cpu_seconds() - sink_cpu
        run.delivered = sink.delivered()
        finish.set()
        for child in children:
            child.join()
            if child.exitcode != 0:
                sys.exit(f"a delivery process failed ({label})")
    run.sent = sum(result.sent for result in done)
    run.mailer_cpu = sum(result.cpu for result in done)
    run.render_cpu = sum(result.render_cpu for result in done)
    run.statements = sum(result.statements for result in done)
    return run


def one_statement(connection: Connection, results: list[Result], now: datetime) -> None:
    """The alternative to claims.finish measured by `result_writes`: a group of `sent`
    results in one UPDATE ... FROM (VALUES ...) instead of one UPDATE a row."""
    rows = [_values(result, now) for result in results]
    names = [key for key in rows[0] if key != "lease_owner"]
    given = Values(*(column(key, outbox.c[key if key != "row_id" else "id"].type)
                     for key in names), name="given").data(
        [tuple(row[key] for key in names) for row in rows])  # fmt: skip
    changes = {key: cast(given.c[key], outbox.c[key].type) for key in names if key != "row_id"}
    connection.execute(
        update(outbox)
        .where(outbox.c.id == given.c.row_id, outbox.c.lease_owner == "bench",
               (outbox.c.status == "sending").is_(true()))  # as claims._finishing does
        .values(changes | {"lease_owner": None})
    )  # fmt: skip


def result_writes(url: str, group: int = 5, rounds: int = 2, rows: int = 4000) -> None:
    """Delivery results written as the writer does it (a group commit of `group` results):
    claims.finish (one UPDATE a row, sent by psycopg's executemany in one pipeline) against
    one UPDATE ... FROM VALUES a group, alternately over the same rows: wall time and the
    backend's CPU."""
    engine = create_engine(url)
    now = START + timedelta(minutes=3)
    with engine.connect() as connection:
        pid = connection.scalar(text("SELECT pg_backend_pid()"))
        ids = list(connection.scalars(text("SELECT id FROM outbox ORDER BY id LIMIT :n"),
                                      {"n": rows}))  # fmt: skip
        connection.commit()
        spent = {"finish (executemany)": [0.0, 0.0], "one statement": [0.0, 0.0]}
        for _round in range(rounds):
            for way in spent:
                with connection.begin():
                    connection.execute(update(outbox).where(outbox.c.id <= ids[-1])
                                       .values(status="sending", lease_owner="bench"))  # fmt: skip
                began, cpu = time.perf_counter(), process_cpu_seconds(pid)
                for start in range(0, len(ids), group):
                    results = [Result(i, "sent", reply="250 2.0.0 Ok: queued", message_id=f"<m{i}>",
                                      links=["https://shop.example/"], consent_entry_id=None)
                               for i in ids[start : start + group]]  # fmt: skip
                    with connection.begin():
                        if way == "one statement":
                            one_statement(connection, results, now)
                        else:
                            finish(connection, "bench", results, now)
                spent[way][0] += time.perf_counter() - began
                spent[way][1] += process_cpu_seconds(pid) - cpu
    engine.dispose()
    count = len(ids) * rounds
    print(f"\nresults written in commits of {group} on PostgreSQL, {count:,} each way "
          "(alternating): " + "; ".join(f"{way}: {wall * 1e6 / count:,.0f} µs wall, "
                                        f"{cpu * 1e6 / count:,.0f} µs server CPU a message"
                                        for way, (wall, cpu) in spent.items()))  # fmt: skip


@dataclass
class Project:
    settings: Settings
    url: str
    database: str | None  # the PostgreSQL database's name (its backends are measured)


def prepare(workdir: Path, url: str, database: str | None, contacts: int, sessions: int,
            render_processes: int, algorithm: Algorithm) -> Project:  # fmt: skip
    """The example project on `url`, its contacts imported and their first message queued."""
    workdir.mkdir()
    settings, _record = project(workdir, url, 25, sessions, render_processes, algorithm)
    csv = workdir / "contacts.csv"
    write_contacts(csv, contacts)
    manager = multiprocessing.get_context("fork").Manager()
    seconds = manager.dict()
    child = multiprocessing.get_context("fork").Process(
        target=set_up, args=(settings, csv, seconds)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        sys.exit("set-up failed")
    manager.shutdown()
    return Project(settings, url, database)


@dataclass
class Round:
    runs: list[Run] = field(default_factory=list)
    reference: float = 0.0  # smtp-source, messages/s


def signature_cpu(settings: Settings, count: int = 300) -> float:
    """CPU µs of one DKIM signature with the project's key, over header-sized data: the part
    of each message's cost that no code of ours can lower (for RSA, the modular arithmetic)."""
    assert settings.dkim is not None
    key = load_key(settings.dkim.key_file, settings.dkim.domain, settings.dkim.selector,
                   settings.dkim.algorithm)  # fmt: skip
    data = b"x" * 700
    key.signature(data)  # parses the key once, as a render process does
    started = time.process_time()
    for _ in range(count):
        key.signature(data)
    return (time.process_time() - started) * 1e6 / count


def show(rounds: list[Round], sessions: int, signature: float) -> None:
    print(
        f"\nmessages/s (ratio to smtp-source in the same round), {sessions} sessions a "
        f"process; best of {len(rounds)}, then every round:"
    )
    labels = [run.label for run in rounds[0].runs]
    for index, label in enumerate(labels):
        runs = [round_.runs[index] for round_ in rounds]
        ratios = [run.rate / round_.reference for run, round_ in zip(runs, rounds, strict=True)]
        best = max(range(len(runs)), key=lambda i: ratios[i])
        every = ", ".join(f"{run.rate:,.0f} ({ratio:.3f})"
                          for run, ratio in zip(runs, ratios, strict=True))  # fmt: skip
        print(f"  {label:<16} {runs[best].rate:7,.0f} msgs/s  ratio {ratios[best]:.3f}   [{every}]")
    references = ", ".join(f"{round_.reference:,.0f}" for round_ in rounds)
    print(f"  {'smtp-source':<16} {max(r.reference for r in rounds):7,.0f} msgs/s  [{references}]")
    budget = 2e6 / (0.1 * max(r.reference for r in rounds))
    print(f"  issue 16's 0.1 of smtp-source leaves {budget:,.0f} µs of the 2 cores a message, "
          f"all processes together; the DKIM signature alone takes {signature:,.0f} of them "
          f"({signature / budget:.0%})")  # fmt: skip
    base = [round_.runs[0].rate for round_ in rounds]
    for index, label in enumerate(labels[1:], 1):
        if not label.startswith("postgresql"):
            continue
        scale = [round_.runs[index].rate / b for round_, b in zip(rounds, base, strict=True)]
        print(f"  {label} / {labels[0]}: " + ", ".join(f"{s:.2f}" for s in scale))
    print(
        "\nCPU per message, µs (best round): delivering processes, their render processes, "
        "smtp-sink, PostgreSQL backends, PostgreSQL background; total; the ceiling of 2 "
        "cores at that cost; statements per message sent by the delivering processes"
    )
    for index, label in enumerate(labels):
        best = max(rounds, key=lambda round_: round_.runs[index].rate)
        run = best.runs[index]
        ceiling = 2e6 / run.per_message(run.total_cpu)
        print(
            f"  {label:<16} mailer {run.per_message(run.mailer_cpu):4.0f}  render "
            f"{run.per_message(run.render_cpu):4.0f}  sink {run.per_message(run.sink_cpu):3.0f}"
            f"  pg {run.per_message(run.server_cpu):4.0f}  pg-bg "
            f"{run.per_message(run.background_cpu):3.0f}  total "
            f"{run.per_message(run.total_cpu):5.0f}  ceiling {ceiling:6,.0f}/s "
            f"({ceiling / best.reference:.3f} of smtp-source: the best ratio that CPU allows)  "
            f"statements {run.statements / max(run.sent, 1):.2f}  "
            f"({run.sent:,} sent, sink counted {run.delivered:,}, {run.seconds:.1f} s)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=2, help="rounds (best and spread shown)")
    parser.add_argument("--sessions", type=int, default=10, help="SMTP connections a process")
    parser.add_argument(
        "--render-processes",
        type=int,
        default=2,
        help="delivery.render_processes of each process (mailer's default: 2)",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("MAILER_TEST_DATABASE_URL")
                        or DEFAULT_POSTGRES_URL,
                        help="a server the bench may create a database on")  # fmt: skip
    parser.add_argument(
        "--processes", default="1,2,3", help="delivery processes on PostgreSQL, e.g. 1,2,3"
    )
    parser.add_argument(
        "--algorithm",
        choices=get_args(Algorithm),
        default="rsa-sha256",
        help="the DKIM key the messages are signed with (mailer's default: rsa-sha256; "
        "ed25519-sha256 shows what the RSA arithmetic costs)",
    )
    arguments = parser.parse_args(argv)
    require_postfix()
    counts = [int(n) for n in arguments.processes.split(",")]
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as folder, \
            postgres_database(arguments.postgres_url) as (pg_url, pg_name):  # fmt: skip
        workdir = Path(folder)
        started = time.perf_counter()
        postgres = prepare(workdir / "postgresql", pg_url, pg_name, arguments.contacts,
                           arguments.sessions, arguments.render_processes,
                         arguments.algorithm)  # fmt: skip
        sqlite_url = f"sqlite:///{workdir / 'sqlite.db'}"
        sqlite = prepare(workdir / "sqlite", sqlite_url, None, arguments.contacts,
                         arguments.sessions, arguments.render_processes,
                         arguments.algorithm)  # fmt: skip
        print(
            f"{arguments.contacts:,} messages queued on PostgreSQL ({pg_name}) and SQLite "
            f"in {time.perf_counter() - started:.0f} s; {os.cpu_count()} cores"
        )
        signature = signature_cpu(postgres.settings)
        print(f"DKIM {arguments.algorithm}: one signature costs {signature:,.0f} µs of CPU "
              "on this machine (the key's arithmetic alone, measured now)")  # fmt: skip
        message = sample_message(postgres.settings)
        rounds = []
        for number in range(arguments.repeat):
            round_ = Round()
            for processes in counts:
                label = f"postgresql x{processes}"
                round_.runs.append(deliver_with(postgres.settings, pg_url, label, processes,
                                                pg_name))  # fmt: skip
                print(
                    f"round {number + 1}: {label}: {round_.runs[-1].rate:,.0f} msgs/s", flush=True
                )
            round_.runs.append(deliver_with(sqlite.settings, sqlite_url, "sqlite x1", 1, None))
            print(f"round {number + 1}: sqlite x1: {round_.runs[-1].rate:,.0f} msgs/s", flush=True)
            with SmtpSink() as sink:
                reference = smtp_source_run(sink.port, message, arguments.contacts,
                                            arguments.sessions)  # fmt: skip
            round_.reference = reference.rate
            print(f"round {number + 1}: smtp-source: {reference.rate:,.0f} msgs/s", flush=True)
            rounds.append(round_)
        show(rounds, arguments.sessions, signature)
        result_writes(pg_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
