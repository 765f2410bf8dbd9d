"""Token buckets kept in the database, so that a limit holds across every process that shares it
(any number of `mailer run` and `mailer serve`, on any number of hosts).

A bucket is one row of `shared_limits`: the tokens it held when it was last refilled, and when.
`take` refills and takes in one statement (INSERT ... ON CONFLICT DO UPDATE ... RETURNING): the
row lock makes the arithmetic exact whatever the number of processes. A row whose bucket is full
again means nothing (a missing row is a full bucket), so `forget_full` deletes it: the table
holds only the buckets in use, and a key expires by time, never because others were added.

Processes may disagree on a limit (two daemons started with different [delivery] rates): the
bucket then refills at the lowest rate, with that limit's burst, for as long as a process
asserting it keeps taking (`STRICT_FOR` after its last take), and each take says the rate that
held (`Taken.rate`), so that a process held below its own limit can say so. Without that, each
take would refill the row at its own process's rate, and the limit would be neither's.

Times are epoch seconds of the injected clock, so tests move time instead of waiting.

On SQLite the buckets live in a file of their own beside the database (mailer.db ->
mailer.limits.db): SQLite has one write lock per file, and the form's limit check must not wait
behind an import, the delivery's results or the form's own look-ups (its answer's timing would
tell what they found). The migrated table in the main file stays empty there.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Float,
    Integer,
    and_,
    case,
    cast,
    create_engine,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy import literal as value
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable

from mailer.store.engine import create_database_engine, reading
from mailer.store.tables import form_posts, shared_limits

SWEEP_EVERY = 60.0  # seconds between two deletions of full buckets, per process
STRICT_FOR = 10.0  # seconds a stricter limit holds after the last take of a process asserting it
# The tables of the side file on SQLite: written by the serving processes at every form post,
# they must not wait behind the main file's write lock.
SIDE_TABLES = (shared_limits, form_posts)


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: float  # the most tokens saved up (at least 1)


@dataclass(frozen=True)
class Taken:
    granted: int  # tokens taken (0 to the number asked for)
    wait: float  # seconds until the bucket holds a whole token again (0 when it does now)
    rate: float  # what the bucket refilled at: below the limit asked, another process's held


def take(connection: Connection, bucket: str, limit: Limit, wanted: int, now: float) -> Taken:
    """Take up to `wanted` whole tokens from `bucket` at `now`: as many as it holds. The
    bucket refills at `limit`, or at the lower rate another process asserted less than
    `STRICT_FOR` seconds ago (its limit then holds, and `limit` does not extend it)."""
    row = shared_limits.c
    stricter = and_(row.strict_until > now, row.rate < limit.rate)  # NULL (before 0026): no
    rate = case((stricter, row.rate), else_=value(limit.rate, Float))
    burst = case((stricter, row.burst), else_=value(limit.burst, Float))
    refilled = row.tokens + (value(now, Float) - row.refilled_at) * rate
    held = case((refilled > burst, burst), else_=refilled)
    whole = func.floor(held) if connection.dialect.name == "postgresql" else held
    granted = case((held >= wanted, wanted), (held < 1, 0), else_=cast(whole, Integer))
    left = held - granted
    first = min(wanted, math.floor(limit.burst))
    dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(shared_limits).values(
        bucket=bucket, tokens=limit.burst - first, refilled_at=now, granted=first,
        full_at=now + first / limit.rate, rate=limit.rate, burst=limit.burst,
        strict_until=now + STRICT_FOR,
    )  # fmt: skip
    full_at = value(now, Float) + (burst - left) / rate
    # Every expression reads the row as it was before this update (SQL's rule for SET).
    until = case((stricter, row.strict_until), else_=now + STRICT_FOR)
    changes = {"tokens": left, "refilled_at": now, "granted": granted, "full_at": full_at,
               "rate": rate, "burst": burst, "strict_until": until}  # fmt: skip
    statement = statement.on_conflict_do_update(index_elements=["bucket"], set_=changes)
    statement = statement.returning(row.granted, row.tokens, row.rate)
    got, tokens, held_rate = connection.execute(statement).one()
    return Taken(got, 0.0 if tokens >= 1 else (1 - tokens) / held_rate, held_rate)


def waiting(connection: Connection, bucket: str, limit: Limit, now: float) -> float:
    """Seconds until `bucket` holds a whole token again (0 when it does now), read only."""
    row = connection.execute(
        select(shared_limits.c.tokens, shared_limits.c.refilled_at, shared_limits.c.rate,
               shared_limits.c.burst, shared_limits.c.strict_until)
        .where(shared_limits.c.bucket == bucket)
    ).one_or_none()  # fmt: skip
    if row is None:
        return 0.0  # a missing row is a full bucket
    held = _holding(row, limit, now)
    tokens = min(held.burst, row.tokens + (now - row.refilled_at) * held.rate)
    return 0.0 if tokens >= 1 else (1 - tokens) / held.rate


def _holding(row: Any, limit: Limit, now: float) -> Limit:
    """The limit a bucket's row (rate, burst, strict_until) refills at `now` for a process
    asking `limit`, as `take` decides it."""
    if row.strict_until is not None and row.strict_until > now and row.rate < limit.rate:
        return Limit(row.rate, row.burst)
    return limit


def refill(connection: Connection, bucket: str) -> None:
    """Fill `bucket` again (a token given back to a bucket of one, e.g. a send that failed)."""
    connection.execute(delete(shared_limits).where(shared_limits.c.bucket == bucket))


def forget_full(connection: Connection, now: float) -> int:
    """Delete the buckets that are full again at `now` (a missing row reads as full), but
    not while a limit asserted in the row may still hold (a missing row would read as full
    at the next taker's own limit, and a looser process would take its whole burst)."""
    row = shared_limits.c
    unclaimed = or_(row.strict_until.is_(None), row.strict_until <= now)
    full: ColumnElement[bool] = and_(row.full_at <= now, unclaimed)
    return connection.execute(delete(shared_limits).where(full)).rowcount


class SharedLimits:
    """`take` in its own transaction, and now and then (SWEEP_EVERY) the full buckets swept."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine if engine.dialect.name == "postgresql" else sidecar(engine)
        self.next_sweep = -math.inf

    def take(self, wanted: dict[str, tuple[Limit, int]], now: float) -> dict[str, Taken]:
        """Several buckets at once (one round trip's transaction): bucket -> (limit, count)."""
        with self.engine.begin() as connection:
            # In the order of their names: two processes taking the same buckets cannot deadlock.
            taken = {bucket: take(connection, bucket, limit, count, now)
                     for bucket, (limit, count) in sorted(wanted.items())}  # fmt: skip
            if now >= self.next_sweep:
                forget_full(connection, now)
                self.next_sweep = now + SWEEP_EVERY
        return taken

    def refill(self, bucket: str) -> None:
        with self.engine.begin() as connection:
            refill(connection, bucket)

    def waiting(self, bucket: str, limit: Limit, now: float) -> float:
        with reading(self.engine) as connection:
            return waiting(connection, bucket, limit, now)


_sidecars: dict[str, Engine] = {}
_sidecars_lock = threading.Lock()


def sidecar(engine: Engine) -> Engine:
    """The SQLite file of the buckets (and of the form posts not yet recorded,
    store/form_posts.py) beside `engine`'s (one engine a file, per process)."""
    database = engine.url.database
    if not database or database == ":memory:":
        path = ""  # an in-memory database: the buckets in memory too, for this process
    else:
        main = Path(database)
        path = str(main.with_name(f"{main.stem}.limits{main.suffix or '.db'}"))
    with _sidecars_lock:
        if path not in _sidecars:
            opened = (create_database_engine(f"sqlite:///{path}") if path else
                      create_engine("sqlite://", poolclass=StaticPool,
                                    connect_args={"check_same_thread": False}))  # fmt: skip
            with opened.begin() as connection:
                for table in SIDE_TABLES:
                    connection.execute(CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        connection.execute(CreateIndex(index, if_not_exists=True))
                _add_missing_columns(connection)
            _sidecars[path] = opened
        return _sidecars[path]


def _add_missing_columns(connection: Connection) -> None:
    """Bring a bucket file written by an older mailer up to the table (it has no migrations
    of its own; the columns added since are nullable)."""
    present = {row[1] for row in connection.exec_driver_sql("PRAGMA table_info(shared_limits)")}
    for column in shared_limits.columns:
        if column.name not in present:
            kind = column.type.compile(dialect=connection.dialect)
            connection.exec_driver_sql(f"ALTER TABLE shared_limits ADD COLUMN {column.name} {kind}")
