"""Benchmark: counting segments over a large database of contacts and website events.

DESIGN.md asks of a segment over a large database only to "print its time and the query plan it
uses". This script does that for a fixed set of expressions, on SQLite or PostgreSQL: each is
parsed, compiled by `SegmentCompiler.for_settings(settings, NOW)` and counted twice with
`count_segment`; the second (warm) count's time is the one reported, the first (cold) is shown
beside it. The query plan printed is that of the very statement `count_segment` runs, with its
bound parameters: the statement is executed once more with EXPLAIN QUERY PLAN (SQLite) or
EXPLAIN (PostgreSQL) put in front of it on its way to the driver.

The database is filled with bulk SQL (a recursive CTE on SQLite, generate_series on
PostgreSQL), in transactions of CHUNK rows, so neither this process nor the database holds
the whole load in memory:

* N contacts, with attributes {"orders": 0..12 (most have a few), "favourite_roast": ...},
  all members of the list "news", each with a consent_status row for it (80 % granted,
  10 % confirmed, 10 % withdrawn) citing one real, hash-chained consent ledger entry;
* M website events of 60 % of the contacts, over the 365 days before NOW: viewed_product
  70 %, cart_abandoned 20 %, purchased 10 %, properties {"category": espresso/filter/decaf};
* an "open" of campaign "welcome", step "hello", for 30 % of the contacts, and a "click" for
  half of those, also over the last year.

Values come from integer hashes of the row number, not from random(), so both databases get
the same rows and must give the same counts. PostgreSQL gets a VACUUM ANALYZE after the load,
as autovacuum would give it; SQLite gets none, because mailer never runs one (the measured
file is what a user's database looks like).

    .venv/bin/python bench/segment_bench.py [--contacts 1000000] [--events 5000000]
        [--database sqlite|postgresql]

PostgreSQL: MAILER_TEST_DATABASE_URL, or a local server's database "test"; the run happens in
a fresh schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from databases import Flavour, database, ledger_entry  # bench/databases.py, beside this script
from sqlalchemy import ColumnElement, Connection, Engine, event, func, select, text

from mailer.campaigns.segment_sql import SegmentCompiler, count_segment
from mailer.campaigns.segments import parse_segment
from mailer.clock import FrozenClock
from mailer.config import Settings, load_settings
from mailer.store.tables import contacts
from mailer.workspace import Workspace

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=400)  # when every contact joined and consented
YEAR_SECONDS = 365 * 86400
LIST_NAME = "news"
CHUNK = 500_000  # rows per INSERT ... SELECT, each in its own transaction
VISITORS = 0.6  # of the contacts, those with website events
EXPRESSIONS = (
    "orders > 1",
    'event "viewed_product" within 7d and not event "purchased" within 7d',
    'event "purchased" count >= 2 within 365d',
    'event "viewed_product" where category = "espresso" count >= 3 within 30d',
    "not opened any within 90d and not clicked any within 90d",
    f'in list "{LIST_NAME}" and consent "{LIST_NAME}" and orders >= 3',
)

SETTINGS = f"""
[sender]
name = "Bench Coffee"
email = "news@bench.example"
postal_address = "Bench Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[attributes]
orders = "integer"
favourite_roast = "string"

[lists.{LIST_NAME}]
title = "News"
double_opt_in = false
"""


# -- bulk SQL, spelled per database ------------------------------------------------------------

PRIME = 2_147_483_647  # 2**31 - 1: every product below stays under 2**63
# One multiplier per independent choice (a row's contact, its name, its age, ...).
ORDERS_A, ORDERS_B, ROAST, CONSENT = 742_938_285, 950_706_376, 1_226_874_159, 1_343_714_438
VISITOR, NAME, CATEGORY, AGE = 62_089_911, 1_588_635_695, 1_117_695_901, 2_027_812_808
ENGAGED, OPEN_AGE, CLICKS, CLICK_DELAY = 359_035_804, 1_564_493_163, 1_103_515_245, 16_807


def pick(column: str, multiplier: int, n: int) -> str:
    """SQL for a well-spread integer in 0..n-1 chosen by the row number `column`, the same on
    both databases (64-bit integer arithmetic). Two rounds of squaring modulo a prime: a
    merely linear hash (i * m % p) makes the events of one contact alike (their row numbers
    form a lattice), which skews every per-contact count. Parenthesised: SQLite's || binds
    tighter than * and %."""
    first = f"(({column} * {multiplier} + 12345) % {PRIME})"
    second = f"((({first} * {first} % {PRIME}) * {multiplier} + 54321) % {PRIME})"
    return f"({second} * {second} % {PRIME} % {n})"


def choice(column: str, multiplier: int, weighted: list[tuple[int, str]]) -> str:
    """SQL choosing one of the quoted values by percentage: [(70, 'a'), (30, 'b')]."""
    roll, cases, upto = pick(column, multiplier, 100), [], 0
    for percent, value in weighted[:-1]:
        upto += percent
        cases.append(f"WHEN {roll} < {upto} THEN {value}")
    return f"(CASE {' '.join(cases)} ELSE {weighted[-1][1]} END)"


def contact_rows(flavour: Flavour) -> str:
    orders = f"({pick('i', ORDERS_A, 13)} * {pick('i', ORDERS_B, 13)} / 12)"  # 0..12, mostly low
    roast = choice("i", ROAST, [(40, "'espresso'"), (30, "'filter'"), (20, "'dark'"),
                                (10, "'decaf'")])  # fmt: skip
    attributes = flavour.json(
        f"""'{{"orders": ' || {orders} || ', "favourite_roast": "' || {roast} || '"}}'"""
    )
    return flavour.insert(
        "contacts", "id, email, attributes, created_at, updated_at",
        f"i, 'c' || i || '@example.com', {attributes}, :long_ago, :long_ago",
    )  # fmt: skip


def website_event_rows(flavour: Flavour, visitors: int) -> str:
    name = choice("i", NAME, [(70, "'viewed_product'"), (20, "'cart_abandoned'"),
                              (10, "'purchased'")])  # fmt: skip
    category = choice("i", CATEGORY, [(34, "'espresso'"), (33, "'filter'"), (33, "'decaf'")])
    properties = flavour.json(f"""'{{"category": "' || {category} || '"}}'""")
    occurred_at = flavour.shifted("now", f"-{pick('i', AGE, YEAR_SECONDS)}")
    return flavour.insert(
        "events", "contact_id, kind, name, step, properties, occurred_at",
        f"1 + {pick('i', VISITOR, visitors)}, 'website', {name}, NULL, {properties}, "
        f"{occurred_at}",
    )  # fmt: skip


def engagement_rows(flavour: Flavour, kind: str) -> str:
    """An open of welcome/hello by 30 % of the contacts, a day to a year ago; with kind
    "click", a click by half of those, up to an hour after the open."""
    seconds = f"86400 + {pick('i', OPEN_AGE, YEAR_SECONDS - 86400)}"
    where = f"{pick('i', ENGAGED, 10)} < 3"
    if kind == "click":
        seconds = f"{seconds} - 1 - {pick('i', CLICK_DELAY, 3600)}"
        where = f"{where} AND {pick('i', CLICKS, 2)} = 0"
    empty = flavour.json("'{}'")
    occurred_at = flavour.shifted("now", f"-({seconds})")
    return flavour.insert(
        "events", "contact_id, kind, name, step, properties, occurred_at",
        f"i, '{kind}', 'welcome', 'hello', {empty}, {occurred_at}", where,
    )  # fmt: skip


def fill(engine: Engine, flavour: Flavour, list_id: int, count: int, events: int) -> None:
    """Every table, one chunk per transaction; progress printed per table."""
    params: dict[str, Any] = {
        "list_id": list_id, "long_ago": flavour.stamp(LONG_AGO), "now": flavour.stamp(NOW),
        "purpose": LIST_NAME,
    }  # fmt: skip
    bulk(engine, "contacts", contact_rows(flavour), count, params)
    with engine.begin() as connection:
        params["entry_id"] = ledger_entry(connection, LIST_NAME, LONG_AGO)
    bulk(engine, "memberships", flavour.insert(
        "memberships", "list_id, contact_id, joined_at, source",
        ":list_id, i, :long_ago, 'bench'",
    ), count, params)  # fmt: skip
    status = choice("i", CONSENT, [(80, "'granted'"), (10, "'confirmed'"), (10, "'withdrawn'")])
    bulk(engine, "consent_status", flavour.insert(
        "consent_status", "contact_id, purpose, status, since, entry_id",
        f"i, :purpose, {status}, :long_ago, :entry_id",
    ), count, params)  # fmt: skip
    visitors = max(1, int(count * VISITORS))
    bulk(engine, "website events", website_event_rows(flavour, visitors), events, params)
    bulk(engine, "open events", engagement_rows(flavour, "open"), count, params)
    bulk(engine, "click events", engagement_rows(flavour, "click"), count, params)
    if flavour.postgresql:  # contact ids were given explicitly: move the sequence past them
        with engine.begin() as connection:
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence('contacts', 'id'), :count)"),
                {"count": count},
            )


def bulk(engine: Engine, label: str, statement: str, rows: int, params: dict[str, Any]) -> None:
    """Run `statement` for i = 1..rows, CHUNK at a time, and say how long it took."""
    started, written = time.perf_counter(), 0
    for lo in range(1, rows + 1, CHUNK):
        hi = min(lo + CHUNK - 1, rows)
        with engine.begin() as connection:
            done = connection.execute(text(statement), {**params, "lo": lo, "hi": hi}).rowcount
            if done < 0:  # sqlite3 counts no rows for a statement that starts with WITH
                done = int(connection.scalar(text("SELECT changes()")) or 0)
            written += done
    print(f"    {label}: {written:,} rows in {time.perf_counter() - started:.1f} s")


def analyze(engine: Engine) -> None:
    """What autovacuum would do after the load: statistics and the visibility map."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


# -- the databases -----------------------------------------------------------------------------


def bench_settings(workdir: Path, url: str) -> Settings:
    path = workdir / "settings.toml"
    path.write_text(textwrap.dedent(SETTINGS), encoding="utf-8")
    return load_settings(path, environ={"MAILER_SECRET_KEY": "x" * 40, "MAILER_DATABASE_URL": url})


# -- the measurements --------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    expression: str
    count: int
    cold: float
    warm: float
    plan: list[str]


@contextmanager
def explaining(connection: Connection, prefix: str) -> Iterator[None]:
    """Statements run on `connection` meanwhile are explained instead: `prefix` is put in
    front of the SQL on its way to the driver, after SQLAlchemy has expanded and processed
    the parameters, so the plan is that of exactly what would have run."""

    def prefixed(
        _connection: Connection, _cursor: Any, statement: str, parameters: Any, *_rest: Any
    ) -> tuple[str, Any]:
        return f"{prefix} {statement}", parameters

    event.listen(connection, "before_cursor_execute", prefixed, retval=True)
    try:
        yield
    finally:
        event.remove(connection, "before_cursor_execute", prefixed)


def query_plan(
    connection: Connection, condition: ColumnElement[bool], postgresql: bool
) -> list[str]:
    statement = select(func.count()).select_from(contacts).where(condition)  # as count_segment
    with explaining(connection, "EXPLAIN" if postgresql else "EXPLAIN QUERY PLAN"):
        # Typed as count_segment's one column; the rows are EXPLAIN's.
        rows: list[tuple[Any, ...]] = [tuple(row) for row in connection.execute(statement)]
    if postgresql:  # one text column per line, already indented
        return [str(row[0]) for row in rows]
    depth: dict[int, int] = {0: -1}  # SQLite: (id, parent, notused, detail), parents first
    lines = []
    for row in rows:
        node, parent, detail = int(row[0]), int(row[1]), str(row[3])
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return lines


def measure(connection: Connection, compiler: SegmentCompiler, expression: str,
            postgresql: bool) -> Measurement:  # fmt: skip
    condition = compiler.where(parse_segment(expression))
    seconds, counts = [], []
    for _ in range(2):  # cold, then warm
        started = time.perf_counter()
        counts.append(count_segment(connection, condition))
        seconds.append(time.perf_counter() - started)
    if counts[0] != counts[1]:
        raise AssertionError(f"{expression}: counted {counts[0]:,}, then {counts[1]:,}")
    plan = query_plan(connection, condition, postgresql)
    return Measurement(expression, counts[1], seconds[0], seconds[1], plan)


def report(number: int, measurement: Measurement, total: int) -> None:
    share = measurement.count / total if total else 0.0
    print(f"\n[{number}] {measurement.expression}")
    print(f"    count {measurement.count:,} ({share:.1%} of the contacts)   "
          f"warm {measurement.warm:.3f} s   (cold {measurement.cold:.3f} s)")  # fmt: skip
    print("    query plan:")
    print(textwrap.indent("\n".join(measurement.plan), "        "))


def summarise(kind: str, count: int, events: int, results: list[Measurement]) -> None:
    print(f"\n== summary ({kind}, {count:,} contacts, {events:,} website events) ==")
    print(f"{'#':>2} {'warm s':>8} {'cold s':>8} {'count':>10}  expression")
    for number, result in enumerate(results, 1):
        print(f"{number:>2} {result.warm:8.3f} {result.cold:8.3f} {result.count:>10,}  "
              f"{result.expression}")  # fmt: skip
    slowest = max(range(len(results)), key=lambda index: results[index].warm)
    print(f"slowest (warm): [{slowest + 1}] {results[slowest].expression}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB")


def run(kind: str, count: int, events: int) -> None:
    print(f"== {kind}: {count:,} contacts, {events:,} website events ==")
    flavour = Flavour(kind == "postgresql")
    with (
        tempfile.TemporaryDirectory(prefix="mailer-segment-bench-") as temporary,
        database(kind, Path(temporary), "segments") as url,
    ):
        settings = bench_settings(Path(temporary), url)
        workspace = Workspace(settings, FrozenClock(NOW))
        try:
            engine = workspace.engine  # opens, migrates, syncs lists
            started = time.perf_counter()
            print("filling:")
            fill(engine, flavour, workspace.list_ids[LIST_NAME], count, events)
            if flavour.postgresql:
                analyze(engine)
            print(f"filled in {time.perf_counter() - started:.1f} s")
            compiler = SegmentCompiler.for_settings(settings, NOW)
            results = []
            with engine.connect() as connection:
                for number, expression in enumerate(EXPRESSIONS, 1):
                    results.append(measure(connection, compiler, expression, flavour.postgresql))
                    report(number, results[-1], count)
                    connection.rollback()
        finally:
            workspace.close()
    summarise(kind, count, events, results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--contacts", type=int, default=1_000_000, help="contacts")
    parser.add_argument("--events", type=int, default=5_000_000, help="website events")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args(argv)
    if args.contacts < 1 or args.events < 0:
        parser.error("--contacts must be at least 1 and --events at least 0")
    run(args.database, args.contacts, args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
