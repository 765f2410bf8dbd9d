"""Benchmark: one scheduler tick over a large number of enrolled contacts with few of them due.

DESIGN.md budgets "one scheduler tick over 1,000,000 enrolled contacts with 1,000 due" at
"proportional to the due rows, not to all rows (indexed), under 1 s". This script checks both
halves of that sentence on SQLite or PostgreSQL:

* under 1 s: `mailer.campaigns.engine.tick` is timed over N active enrollments of one sequence,
  of which `--due` are due (due_at in the past) and the rest due in a year. Every due contact is
  a member of the list with granted consent, so each due row becomes one outbox row: the tick
  must queue exactly `--due` messages. The first tick is cold (statements not yet compiled,
  pages not yet cached); then `--due` other enrollments are made due and a second tick is timed.
* proportional to the due rows: with `--compare` the same is run over 100,000 enrollments too,
  with the same due count. Ten times the rows must not make a tick ten times slower; the warm
  ticks are compared (growth under 2x passes: an index lookup grows with log N, a scan with N).

The query plan of the due-rows query is printed to show where the time would go: it should
search ix_enrollments_status_due_at, not scan the table.

The database is filled with bulk SQL (a recursive CTE on SQLite, generate_series on
PostgreSQL), not with mailer's importer, which has its own benchmark (import_bench.py): N
contacts, N list memberships joined long ago, N consent_status rows pointing at one real,
hash-chained consent ledger entry, N enrollments that have sent the first step, and a trigger
cursor at the tick's time, so enrolling reads nothing new and the tick's work is advancing.
PostgreSQL gets an ANALYZE after the load, as autovacuum would give it; SQLite gets none,
because mailer never runs one (the measured file is what a user's database looks like).

With `--enroll N` it times the other extreme instead: one tick in which N contacts who have
just joined the list are enrolled and their first step queued (a sequence with a goal and an
A/B variant, as the example's welcome series), beside a reference measured in the same run and
database: a bare INSERT ... SELECT of N outbox rows (the floor; rolled back), and when its batches
of new runs were written (the time between two writes has nothing beside it). With `--baseline
REV` the engine of git revision REV (its mailer/campaigns/engine.py) runs the same tick on an
identical fresh database first, so old and new are compared on the same machine minute.

    .venv/bin/python bench/tick_bench.py [--enrolled 1000000] [--due 1000]
        [--database sqlite|postgresql] [--compare] [--profile] [--baseline REV]
    .venv/bin/python bench/tick_bench.py --enroll 50000 [--database ...] [--baseline REV]

`--sql STATEMENT` (repeatable) runs on the migrated, still empty database before it is filled:
a schema experiment, e.g. `--sql "DROP INDEX ix_outbox_sent_at"` to see what an index costs.

PostgreSQL: MAILER_TEST_DATABASE_URL, or a local server's database "test"; the run happens in
a fresh schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from databases import Flavour, database, ledger_entry  # bench/databases.py, beside this script
from sqlalchemy import Connection, Engine, event, text

from mailer.campaigns.engine import TickReport, tick
from mailer.clock import FrozenClock
from mailer.config import Settings, load_settings
from mailer.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 1.0
SECRET = "mailer-bench-tick-secret-0123456789abcdef"  # keys the consent ledger's chain
ENROLL_BUDGET_SECONDS = 3.0  # one tick that enrolls and queues 50,000 (issue 16)
GROWTH_LIMIT = 2.0  # warm tick at the larger size / at the smaller: under this passes
COMPARE_WITH = 100_000
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=400)  # when every contact joined and consented
LIST_NAME, CAMPAIGN, FIRST_STEP = "news", "drip", "hello"
INDEX = "ix_enrollments_status_due_at"
DUE_QUERY = (
    "SELECT * FROM enrollments WHERE status = 'active' AND due_at <= :now "
    "ORDER BY due_at LIMIT 5000"
)

SETTINGS = f"""
[sender]
name = "Bench Coffee"
email = "news@bench.example"
postal_address = "Bench Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[lists.{LIST_NAME}]
title = "News"
double_opt_in = false

[campaigns.{CAMPAIGN}]
kind = "sequence"
list = "{LIST_NAME}"
trigger = 'joins list "{LIST_NAME}"'

[[campaigns.{CAMPAIGN}.steps]]
name = "{FIRST_STEP}"
template = "{CAMPAIGN}/1"
subject = "Hello"
delay = "0m"

[[campaigns.{CAMPAIGN}.steps]]
name = "later"
template = "{CAMPAIGN}/2"
subject = "A month on"
delay = "30 days"
"""

# The enroll case: the example welcome series' shape (a goal read at every tick, an A/B test).
ENROLL_SETTINGS = SETTINGS.replace(
    f"trigger = 'joins list \"{LIST_NAME}\"'\n",
    f"trigger = 'joins list \"{LIST_NAME}\"'\ngoal = 'event \"purchased\"'\n",
).replace('delay = "0m"\n', 'delay = "0m"\nvariants.B.subject = "Hi there"\n')


class Ticker(Protocol):
    def __call__(self, engine: Engine, settings: Settings, now: datetime) -> TickReport: ...


def engine_at(revision: str) -> Ticker:
    """`tick` as mailer/campaigns/engine.py was at git `revision` (beside today's modules)."""
    source = subprocess.run(["git", "show", f"{revision}:mailer/campaigns/engine.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    module = ModuleType(f"engine_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:mailer/campaigns/engine.py", "exec"), module.__dict__)
    ticker: Ticker = module.tick
    return ticker


# -- bulk SQL, spelled per database ------------------------------------------------------------


def spread(enrolled: int, due: int) -> dict[str, int]:
    """The parameters of due_rows. (Computed here: psycopg binds small ints as smallint, in
    which SQL would overflow multiplying them.)"""
    stride = enrolled // due
    return {"stride": stride, "last": due * stride}


def due_rows(column: str, first: int) -> str:
    """The enrollment ids made due: one in every :stride, starting at `first` (0 or 1), spread
    over the whole table, exactly `due` of them (ids up to :last = due * stride)."""
    return f"({column} <= :last AND ({column} - 1) % :stride = {first})"


def fill(connection: Connection, flavour: Flavour, list_id: int, enrolled: int, due: int) -> None:
    """N contacts on the list with granted consent, N enrollments after the first step, `due`
    of them due now, the rest in a year; the trigger cursor at NOW."""
    params: dict[str, Any] = {
        **spread(enrolled, due), "lo": 1, "hi": enrolled, "count": enrolled, "list_id": list_id,
        "long_ago": flavour.stamp(LONG_AGO), "now": flavour.stamp(NOW), "purpose": LIST_NAME,
        "campaign": CAMPAIGN, "step": FIRST_STEP,
    }  # fmt: skip
    empty = flavour.json("'{}'")
    connection.execute(text(flavour.insert(
        "contacts", "id, email, attributes, created_at, updated_at",
        f"i, 'c' || i || '@example.com', {empty}, :long_ago, :long_ago",
    )), params)  # fmt: skip
    params["entry_id"] = ledger_entry(connection, LIST_NAME, LONG_AGO)
    due_at = (f"CASE WHEN {due_rows('i', 0)} THEN {flavour.shifted('now', '-60 - i % 3600')} "
              f"ELSE {flavour.shifted('now', '365 * 86400 + i')} END")  # fmt: skip
    statements = [
        flavour.insert("memberships", "list_id, contact_id, joined_at, source",
                       ":list_id, i, :long_ago, 'bench'"),
        flavour.insert("consent_status", "contact_id, purpose, status, since, entry_id",
                       "i, :purpose, 'granted', :long_ago, :entry_id"),
        flavour.insert("enrollments",
                       "id, campaign, contact_id, cycle, status, entered_at, last_step, "
                       "last_position, last_step_at, due_at",
                       f"i, :campaign, i, 0, 'active', :long_ago, :step, 0, :long_ago, {due_at}"),
        "INSERT INTO trigger_cursors (campaign, seen_until) VALUES (:campaign, :now)",
    ]  # fmt: skip
    for statement in statements:
        connection.execute(text(statement), params)
    if flavour.postgresql:  # ids were given explicitly: move the sequences past them
        for table in ("contacts", "enrollments"):
            connection.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :count)"), params
            )


def make_more_due(connection: Connection, flavour: Flavour, enrolled: int, due: int,
                  first: int = 1) -> None:  # fmt: skip
    """`due` enrollments other than the first tick's, due a minute or more before NOW (`first`
    1, 2, ...: another set each time)."""
    past = flavour.shifted("now", "-60 - id % 3600")
    connection.execute(
        text(f"UPDATE enrollments SET due_at = {past} "
             f"WHERE {due_rows('id', first)}"),
        {"now": flavour.stamp(NOW), **spread(enrolled, due)},
    )  # fmt: skip


@contextmanager
def slowest_statements(engine: Engine, count: int) -> Iterator[list[tuple[float, float, str]]]:
    """Print the `count` statements that took longest meanwhile (the database's share), and,
    on a PostgreSQL server on this machine, the backend CPU they used, by kind of statement
    (its first words): /proc counts in ticks of 10 ms, so single statements are rough, the
    sums of a kind are not. COPYs (insert_new's rows) do not pass through here: the backend
    CPU outside these statements is theirs (measure_enroll prints it). Yields the timings:
    (seconds, backend CPU, statement)."""
    timings: list[tuple[float, float, str]] = []

    def backend_cpu(cursor: Any) -> float:
        pid = getattr(getattr(cursor.connection, "info", None), "backend_pid", None)
        try:
            return _cpu_seconds(pid) if pid else 0.0
        except OSError:
            return 0.0

    def started(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        connection.info["bench_started"] = (time.perf_counter(), backend_cpu(cursor))

    def finished(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        wall, cpu = connection.info.pop("bench_started")
        timings.append((time.perf_counter() - wall, backend_cpu(cursor) - cpu,
                        " ".join(statement.split())))  # fmt: skip

    if count:
        event.listen(engine, "before_cursor_execute", started)
        event.listen(engine, "after_cursor_execute", finished)
    try:
        yield timings
    finally:
        if count:
            event.remove(engine, "before_cursor_execute", started)
            event.remove(engine, "after_cursor_execute", finished)
            total = sum(seconds for seconds, _, _ in timings)
            server = sum(cpu for _, cpu, _ in timings)
            print(f"{len(timings)} statements, {total:.3f} s in all, "
                  f"{server:.2f} s of backend CPU; the slowest:")  # fmt: skip
            for seconds, cpu, statement in sorted(timings, reverse=True)[:count]:
                print(f"    {seconds:.4f} s  cpu {cpu:.2f} s  {statement[:300]}")
            kinds: dict[str, list[float]] = {}
            for seconds, cpu, statement in timings:
                kind = kinds.setdefault(statement[:70], [0, 0.0, 0.0])
                kind[0] += 1
                kind[1] += seconds
                kind[2] += cpu
            print("by kind (first 70 characters), most backend CPU first:")
            for text_, (n, seconds, cpu) in sorted(kinds.items(), key=lambda k: -k[1][2])[:count]:
                print(f"    {n:3d}x  {seconds:.3f} s  cpu {cpu:.2f} s  {text_}")


def analyze_schema(engine: Engine) -> None:
    """ANALYZE the tables of the bench's schema: a bare ANALYZE would read every schema of
    the database (other runs' too, and wait on or deadlock with one being dropped)."""
    with engine.connect() as connection:
        tables = connection.scalars(text(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()"
        )).all()  # fmt: skip
        connection.execute(text(f"ANALYZE {', '.join(tables)}"))
        connection.commit()


def query_plan(engine: Engine, flavour: Flavour) -> list[str]:
    explain = "EXPLAIN" if flavour.postgresql else "EXPLAIN QUERY PLAN"
    with engine.connect() as connection:
        rows = connection.execute(text(f"{explain} {DUE_QUERY}"), {"now": flavour.stamp(NOW)})
        # SQLite: (id, parent, notused, detail); PostgreSQL: one text column per line.
        return [str(row[-1]) for row in rows]


def fill_joined(connection: Connection, flavour: Flavour, list_id: int, count: int) -> None:
    """`count` contacts with granted consent who joined the list a minute before NOW, after
    the trigger cursor (so the tick enrolls them all), nobody enrolled yet."""
    params: dict[str, Any] = {
        "lo": 1, "hi": count, "count": count, "list_id": list_id, "purpose": LIST_NAME,
        "long_ago": flavour.stamp(LONG_AGO), "joined": flavour.stamp(NOW - timedelta(minutes=1)),
        "seen": flavour.stamp(NOW - timedelta(minutes=5)), "campaign": CAMPAIGN,
    }  # fmt: skip
    empty = flavour.json("'{}'")
    connection.execute(text(flavour.insert(
        "contacts", "id, email, attributes, created_at, updated_at",
        f"i, 'c' || i || '@example.com', {empty}, :joined, :joined",
    )), params)  # fmt: skip
    params["entry_id"] = ledger_entry(connection, LIST_NAME, LONG_AGO)
    statements = [
        flavour.insert("memberships", "list_id, contact_id, joined_at, source",
                       ":list_id, i, :joined, 'bench'"),
        flavour.insert("consent_status", "contact_id, purpose, status, since, entry_id",
                       "i, :purpose, 'granted', :joined, :entry_id"),
        "INSERT INTO trigger_cursors (campaign, seen_until) VALUES (:campaign, :seen)",
    ]  # fmt: skip
    for statement in statements:
        connection.execute(text(statement), params)
    if flavour.postgresql:
        connection.execute(
            text("SELECT setval(pg_get_serial_sequence('contacts', 'id'), :count)"), params
        )


def floor_seconds(engine: Engine, flavour: Flavour, count: int) -> float:
    """The reference: one bare INSERT ... SELECT of `count` queued outbox rows into the same
    database (its indexes and constraints), rolled back."""
    params = {"lo": 1, "hi": count, "now": flavour.stamp(NOW)}
    with engine.connect() as connection:
        started = time.perf_counter()
        connection.execute(text(flavour.insert(
            "outbox", "campaign, step, contact_id, cycle, status, queued_at, send_after",
            "'reference', 'floor', i, 0, 'queued', :now, :now",
        )), params)  # fmt: skip
        seconds = time.perf_counter() - started
        connection.rollback()
    return seconds


# -- the databases -----------------------------------------------------------------------------


def alter_schema(engine: Engine, statements: Sequence[str]) -> None:
    """Run --sql's statements on the migrated, empty database (a schema experiment)."""
    if statements:
        with engine.begin() as connection:
            for statement in statements:
                print(f"schema experiment: {statement}")
                connection.exec_driver_sql(statement)


def bench_settings(workdir: Path, url: str, source: str = SETTINGS) -> Settings:
    path = workdir / "settings.toml"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    environ = {"MAILER_DATABASE_URL": url, "MAILER_SECRET_KEY": SECRET}
    return load_settings(path, environ=environ)


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickTiming:
    seconds: float
    report: TickReport


@dataclass(frozen=True)
class Result:
    enrolled: int
    due: int
    ticks: list[TickTiming]
    uses_index: bool

    @property
    def correct(self) -> bool:
        return all(t.report.queued == self.due for t in self.ticks)

    @property
    def within_budget(self) -> bool:
        return all(t.seconds < BUDGET_SECONDS for t in self.ticks)


def timed_tick(
    engine: Engine,
    settings: Settings,
    now: datetime,
    profiler: cProfile.Profile | None,
    ticker: Ticker = tick,
) -> TickTiming:
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    try:
        report = ticker(engine, settings, now)
    finally:
        if profiler:
            profiler.disable()
    return TickTiming(time.perf_counter() - started, report)


def measure(kind: str, enrolled: int, due: int, workdir: Path, profile: bool,
            baseline: str | None, schema: Sequence[str] = ()) -> Result:  # fmt: skip
    print(f"\n== {kind}: {enrolled:,} enrolled, {due:,} due ==")
    with database(kind, workdir, "tick") as url:
        workspace = Workspace(bench_settings(workdir, url), FrozenClock(NOW))
        try:
            alter_schema(workspace.engine, schema)
            return run_ticks(workspace, Flavour(kind == "postgresql"), enrolled, due, profile,
                             baseline)  # fmt: skip
        finally:
            workspace.close()


def run_ticks(
    workspace: Workspace,
    flavour: Flavour,
    enrolled: int,
    due: int,
    profile: bool,
    baseline: str | None = None,
) -> Result:
    engine, settings = workspace.engine, workspace.settings  # opens, migrates, syncs lists
    started = time.perf_counter()
    with engine.begin() as connection:
        fill(connection, flavour, workspace.list_ids[LIST_NAME], enrolled, due)
    if flavour.postgresql:
        analyze_schema(engine)
    print(f"filled {enrolled:,} contacts, memberships, consent rows and enrollments "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    plan = query_plan(engine, flavour)
    uses_index = any(INDEX in line for line in plan)
    print(f"query plan of the due-rows query ({DUE_QUERY.replace(':now', '?')}):")
    print(textwrap.indent("\n".join(plan), "    "))
    print(f"uses {INDEX}: {'yes' if uses_index else 'NO'}")

    first = timed_tick(engine, settings, NOW, None)
    report_tick("tick 1 (cold)", first, due)
    with engine.begin() as connection:
        make_more_due(connection, flavour, enrolled, due)
    profiler = cProfile.Profile() if profile else None
    with slowest_statements(engine, 8 if profile else 0):
        second = timed_tick(engine, settings, NOW + timedelta(minutes=1), profiler)
    report_tick(f"tick 2 (warm, {due:,} other rows due)", second, due)
    if profiler:
        print("\ntop 25 functions by cumulative time (tick 2, under cProfile):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    ticks = [first, second]
    if baseline:  # then old and new, warm, each over another `due` rows
        for first_row, ticker, label in ((2, engine_at(baseline), f"engine of {baseline}"),
                                         (3, tick, "this engine")):  # fmt: skip
            with engine.begin() as connection:
                make_more_due(connection, flavour, enrolled, due, first_row)
            timing = timed_tick(engine, settings, NOW + timedelta(minutes=first_row), None,
                                ticker)  # fmt: skip
            report_tick(f"tick {first_row + 1} (warm, {label})", timing, due)
        ticks.append(timing)  # this engine's: the budget is its
    return Result(enrolled, due, ticks, uses_index)


def report_tick(label: str, timing: TickTiming, due: int) -> None:
    counts = " ".join(f"{name}={value:,}" for name, value in timing.report.as_dict().items())
    verdict = "MET" if timing.seconds < BUDGET_SECONDS else "MISSED"
    check = "" if timing.report.queued == due else f"  WRONG: queued must be {due:,}"
    print(f"{label}: {timing.seconds:.3f} s  budget < {BUDGET_SECONDS:.0f} s: {verdict}")
    print(f"    {counts}{check}")


def summarise(kind: str, results: list[Result]) -> bool:
    print(f"\n== summary ({kind}) ==")
    print(f"{'enrolled':>12} {'due':>7} {'tick 1 s':>9} {'tick 2 s':>9}  queued ok  budget")
    for result in results:
        seconds = " ".join(f"{t.seconds:9.3f}" for t in result.ticks)
        print(f"{result.enrolled:>12,} {result.due:>7,} {seconds}  "
              f"{'yes' if result.correct else 'NO':>9}  "
              f"{'MET' if result.within_budget else 'MISSED'}")  # fmt: skip
    met = all(r.correct and r.within_budget and r.uses_index for r in results)
    if len(results) > 1:
        small, large = results[0], results[-1]
        growth = large.ticks[-1].seconds / small.ticks[-1].seconds
        flat = growth < GROWTH_LIMIT
        verdict = "does not grow with all rows" if flat else "GROWS with all rows"
        print(f"warm tick at {large.enrolled:,} / at {small.enrolled:,} enrolled "
              f"({large.enrolled / small.enrolled:.0f}x the rows): {growth:.2f}x "
              f"(under {GROWTH_LIMIT:.0f}x: {verdict})")  # fmt: skip
        met = met and flat
    largest = results[-1]
    print(f"budget (one tick over {largest.enrolled:,} enrolled with {largest.due:,} due, "
          f"indexed, under {BUDGET_SECONDS:.0f} s): {'MET' if met else 'MISSED'}")  # fmt: skip
    return met


def measure_enroll(kind: str, count: int, workdir: Path, ticker: Ticker, label: str,
                   profile: bool, schema: Sequence[str] = ()) -> bool:  # fmt: skip
    """One tick that enrolls `count` new members and queues their first step, on a fresh
    database, beside the floor measured in that database; True when it met the budget."""
    print(f"\n== {kind}: one tick enrolls and queues {count:,} ({label}) ==")
    with database(kind, workdir, "enroll") as url:
        settings = bench_settings(workdir, url, ENROLL_SETTINGS)
        workspace = Workspace(settings, FrozenClock(NOW))
        try:
            alter_schema(workspace.engine, schema)
            flavour = Flavour(kind == "postgresql")
            with workspace.engine.begin() as connection:
                fill_joined(connection, flavour, workspace.list_ids[LIST_NAME], count)
            if flavour.postgresql:
                analyze_schema(workspace.engine)
            floor = min(floor_seconds(workspace.engine, flavour, count) for _ in range(3))
            profiler = cProfile.Profile() if profile else None
            with slowest_statements(workspace.engine, 12 if profile else 0) as statements, \
                    server_cpu(workspace.engine) as server, \
                    batch_writes(ticker) as writes:  # fmt: skip
                started, cpu = time.perf_counter(), time.process_time()
                if profiler:
                    profiler.enable()
                report = ticker(workspace.engine, workspace.settings, NOW)
                if profiler:
                    profiler.disable()
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            workspace.close()
    met = seconds < ENROLL_BUDGET_SECONDS and report.enrolled == report.queued == count
    counts = " ".join(f"{name}={value:,}" for name, value in report.as_dict().items())
    print(f"reference (INSERT ... SELECT of {count:,} outbox rows): {floor:.3f} s")
    print(f"tick: {seconds:.3f} s = {seconds / floor:.1f}x the reference  "
          f"budget < {ENROLL_BUDGET_SECONDS:.0f} s: {'MET' if met else 'MISSED'}")  # fmt: skip
    print(f"    {counts}")
    database_cpu = f", the database server's {server[0]:.2f} s" if server else ""
    print(f"    CPU: this process {cpu:.2f} s{database_cpu} (unlike the seconds above, "
          "not stretched by other work on the machine)")  # fmt: skip
    if writes:
        print(f"    {written_batches(writes, started, seconds)}")
    if statements and server:
        rest = server[0] - sum(used for _, used, _ in statements)
        print(f"    the server's CPU outside the statements listed (COPYs of rows): {rest:.2f} s")
    if profiler:
        print("\ntop 25 functions by cumulative time (under cProfile):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    return met


def written_batches(writes: list[tuple[float, float]], started: float, seconds: float) -> str:
    """The batches' writes in the tick (started, lasting seconds): when the first began, how long
    they took, the time between them (the tick's own work with no write beside it: a batch's
    facts read before its write), and after the last (commit, ANALYZE)."""
    spans = sorted(writes)
    between = sum(max(0.0, begun - ended) for (_, ended), (begun, _) in pairwise(spans))
    writing = sum(ended - begun for begun, ended in spans)
    return (f"{len(spans)} batches written: the first began at {spans[0][0] - started:.3f} s, "
            f"writing {writing:.3f} s, between writes {between:.3f} s, after the last "
            f"{started + seconds - spans[-1][1]:.3f} s")  # fmt: skip


@contextmanager
def batch_writes(ticker: Ticker) -> Iterator[list[tuple[float, float]]]:
    """When each batch of new runs was written meanwhile ((start, end), perf_counter): the
    engine's `_write_new_runs` (in `ticker`'s module, a --baseline engine's too) wrapped. What
    runs between two writes, or before the first and after the last, has nothing beside it."""
    spans: list[tuple[float, float]] = []
    module = getattr(ticker, "__globals__", {})
    write = module.get("_write_new_runs")
    if write is None:
        yield spans
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        begun = time.perf_counter()
        try:
            return write(*args, **kwargs)
        finally:
            spans.append((begun, time.perf_counter()))

    module["_write_new_runs"] = timed
    try:
        yield spans
    finally:
        module["_write_new_runs"] = write


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process on this machine, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server_cpu(engine: Engine) -> Iterator[list[float]]:
    """The CPU the PostgreSQL backends of `engine`'s connections used meanwhile (one number,
    filled in at the end), when the server runs on this machine; empty on SQLite or when
    /proc does not show the backends."""
    spent: list[float] = []
    if engine.dialect.name != "postgresql":
        yield spent
        return
    pids: set[int] = set()
    with engine.connect() as connection:  # the pool's connections, as the tick will use them
        pids.add(int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()))

    def connected(dbapi_connection: Any, record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = int(cursor.fetchone()[0])
        pids.add(pid)
        before[pid] = _cpu_seconds(pid)

    try:
        before = {pid: _cpu_seconds(pid) for pid in pids}
    except OSError:
        yield spent
        return
    event.listen(engine, "connect", connected)
    try:
        yield spent
    finally:
        event.remove(engine, "connect", connected)
        with suppress(OSError):
            spent.append(sum(_cpu_seconds(pid) - before[pid] for pid in pids))


def run_enroll(kind: str, count: int, baseline: str | None, profile: bool,
               schema: Sequence[str] = ()) -> bool:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mailer-tick-bench-") as temporary:
        if baseline:
            measure_enroll(kind, count, Path(temporary), engine_at(baseline),
                           f"engine of {baseline}", False, schema)  # fmt: skip
        return measure_enroll(kind, count, Path(temporary), tick, "this engine", profile, schema)


def run(kind: str, enrolled: int, due: int, compare: bool, profile: bool,
        baseline: str | None, schema: Sequence[str] = ()) -> bool:  # fmt: skip
    sizes = sorted({COMPARE_WITH, enrolled}) if compare else [enrolled]
    with tempfile.TemporaryDirectory(prefix="mailer-tick-bench-") as temporary:
        results = [measure(kind, size, due, Path(temporary), profile, baseline, schema)
                   for size in sizes]  # fmt: skip
    return summarise(kind, results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--enrolled", type=int, default=1_000_000, help="active enrollments")
    parser.add_argument("--due", type=int, default=1_000, help="of them due at each tick")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--compare", action="store_true", help=f"also run at {COMPARE_WITH:,} enrolled"
    )
    parser.add_argument("--profile", action="store_true", help="run tick 2 under cProfile")
    parser.add_argument(
        "--enroll",
        type=int,
        metavar="N",
        help="instead: one tick that enrolls and queues N new members",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also time the engine of git revision REV, in the same run",
    )
    parser.add_argument(
        "--sql",
        action="append",
        default=[],
        metavar="STATEMENT",
        help="run on the migrated, empty database before filling it (a schema experiment)",
    )
    args = parser.parse_args(argv)
    if args.enroll:
        met = run_enroll(args.database, args.enroll, args.baseline, args.profile, args.sql)
        return 0 if met else 1
    smallest = min(args.enrolled, COMPARE_WITH) if args.compare else args.enrolled
    if args.due < 1 or smallest < 2 * args.due:
        parser.error("--due must be at least 1 and at most half of the enrolled rows")
    met = run(
        args.database, args.enrolled, args.due, args.compare, args.profile, args.baseline, args.sql
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
