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

    .venv/bin/python bench/tick_bench.py [--enrolled 1000000] [--due 1000]
        [--database sqlite|postgresql] [--compare] [--profile]

PostgreSQL: MAILER_TEST_DATABASE_URL, or a local server's database "test"; the run happens in
a fresh schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from databases import Flavour, database, ledger_entry  # bench/databases.py, beside this script
from sqlalchemy import Connection, Engine, text

from mailer.campaigns.engine import TickReport, tick
from mailer.clock import FrozenClock
from mailer.config import Settings, load_settings
from mailer.workspace import Workspace

BUDGET_SECONDS = 1.0
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


def make_more_due(connection: Connection, flavour: Flavour, enrolled: int, due: int) -> None:
    """`due` enrollments other than the first tick's, due a minute or more before NOW."""
    past = flavour.shifted("now", "-60 - id % 3600")
    connection.execute(
        text(f"UPDATE enrollments SET due_at = {past} "
             f"WHERE {due_rows('id', 1)}"),
        {"now": flavour.stamp(NOW), **spread(enrolled, due)},
    )  # fmt: skip


def query_plan(engine: Engine, flavour: Flavour) -> list[str]:
    explain = "EXPLAIN" if flavour.postgresql else "EXPLAIN QUERY PLAN"
    with engine.connect() as connection:
        rows = connection.execute(text(f"{explain} {DUE_QUERY}"), {"now": flavour.stamp(NOW)})
        # SQLite: (id, parent, notused, detail); PostgreSQL: one text column per line.
        return [str(row[-1]) for row in rows]


# -- the databases -----------------------------------------------------------------------------


def bench_settings(workdir: Path, url: str) -> Settings:
    path = workdir / "settings.toml"
    path.write_text(textwrap.dedent(SETTINGS), encoding="utf-8")
    return load_settings(path, environ={"MAILER_DATABASE_URL": url})


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
    engine: Engine, settings: Settings, now: datetime, profiler: cProfile.Profile | None
) -> TickTiming:
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    try:
        report = tick(engine, settings, now)
    finally:
        if profiler:
            profiler.disable()
    return TickTiming(time.perf_counter() - started, report)


def measure(kind: str, enrolled: int, due: int, workdir: Path, profile: bool) -> Result:
    print(f"\n== {kind}: {enrolled:,} enrolled, {due:,} due ==")
    with database(kind, workdir, "tick") as url:
        workspace = Workspace(bench_settings(workdir, url), FrozenClock(NOW))
        try:
            return run_ticks(workspace, Flavour(kind == "postgresql"), enrolled, due, profile)
        finally:
            workspace.close()


def run_ticks(
    workspace: Workspace, flavour: Flavour, enrolled: int, due: int, profile: bool
) -> Result:
    engine, settings = workspace.engine, workspace.settings  # opens, migrates, syncs lists
    started = time.perf_counter()
    with engine.begin() as connection:
        fill(connection, flavour, workspace.list_ids[LIST_NAME], enrolled, due)
    if flavour.postgresql:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
            connection.commit()
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
    second = timed_tick(engine, settings, NOW + timedelta(minutes=1), profiler)
    report_tick(f"tick 2 (warm, {due:,} other rows due)", second, due)
    if profiler:
        print("\ntop 25 functions by cumulative time (tick 2, under cProfile):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    return Result(enrolled, due, [first, second], uses_index)


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


def run(kind: str, enrolled: int, due: int, compare: bool, profile: bool) -> bool:
    sizes = sorted({COMPARE_WITH, enrolled}) if compare else [enrolled]
    with tempfile.TemporaryDirectory(prefix="mailer-tick-bench-") as temporary:
        results = [measure(kind, size, due, Path(temporary), profile) for size in sizes]
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
    args = parser.parse_args(argv)
    smallest = min(args.enrolled, COMPARE_WITH) if args.compare else args.enrolled
    if args.due < 1 or smallest < 2 * args.due:
        parser.error("--due must be at least 1 and at most half of the enrolled rows")
    return 0 if run(args.database, args.enrolled, args.due, args.compare, args.profile) else 1


if __name__ == "__main__":
    sys.exit(main())
