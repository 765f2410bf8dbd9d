"""Token buckets kept in the database, so that a limit holds across every process that shares it
(any number of `mailer run` and `mailer serve`, on any number of hosts).

A bucket is one row of `shared_limits`: the tokens it held when it was last refilled, and when.
`take` refills and takes in one statement (INSERT ... ON CONFLICT DO UPDATE ... RETURNING): the
row lock makes the arithmetic exact whatever the number of processes. A row whose bucket is full
again means nothing (a missing row is a full bucket), so `forget_full` deletes it: the table
holds only the buckets in use, and a key expires by time, never because others were added.

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
    case,
    cast,
    create_engine,
    delete,
    func,
    select,
)
from sqlalchemy import literal as value
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable

from mailer.store.engine import create_database_engine, reading
from mailer.store.tables import shared_limits

SWEEP_EVERY = 60.0  # seconds between two deletions of full buckets, per process


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: float  # the most tokens saved up (at least 1)


@dataclass(frozen=True)
class Taken:
    granted: int  # tokens taken (0 to the number asked for)
    wait: float  # seconds until the bucket holds a whole token again (0 when it does now)


def take(connection: Connection, bucket: str, limit: Limit, wanted: int, now: float) -> Taken:
    """Take up to `wanted` whole tokens from `bucket` at `now`: as many as it holds."""
    rate, burst = value(limit.rate, Float), value(limit.burst, Float)
    row = shared_limits.c
    refilled = row.tokens + (value(now, Float) - row.refilled_at) * rate
    held = case((refilled > burst, burst), else_=refilled)
    whole = func.floor(held) if connection.dialect.name == "postgresql" else held
    granted = case((held >= wanted, wanted), (held < 1, 0), else_=cast(whole, Integer))
    left = held - granted
    first = min(wanted, math.floor(limit.burst))
    dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(shared_limits).values(
        bucket=bucket, tokens=limit.burst - first, refilled_at=now, granted=first,
        full_at=now + first / limit.rate,
    )  # fmt: skip
    full_at = value(now, Float) + (burst - left) / rate
    changes = {"tokens": left, "refilled_at": now, "granted": granted, "full_at": full_at}
    statement = statement.on_conflict_do_update(index_elements=["bucket"], set_=changes)
    statement = statement.returning(row.granted, row.tokens)
    got, tokens = connection.execute(statement).one()
    return Taken(got, 0.0 if tokens >= 1 else (1 - tokens) / limit.rate)


def waiting(connection: Connection, bucket: str, limit: Limit, now: float) -> float:
    """Seconds until `bucket` holds a whole token again (0 when it does now), read only."""
    row = connection.execute(
        select(shared_limits.c.tokens, shared_limits.c.refilled_at)
        .where(shared_limits.c.bucket == bucket)
    ).one_or_none()  # fmt: skip
    if row is None:
        return 0.0  # a missing row is a full bucket
    tokens = min(limit.burst, row.tokens + (now - row.refilled_at) * limit.rate)
    return 0.0 if tokens >= 1 else (1 - tokens) / limit.rate


def refill(connection: Connection, bucket: str) -> None:
    """Fill `bucket` again (a token given back to a bucket of one, e.g. a send that failed)."""
    connection.execute(delete(shared_limits).where(shared_limits.c.bucket == bucket))


def forget_full(connection: Connection, now: float) -> int:
    """Delete the buckets that are full again at `now` (a missing row reads as full)."""
    full: ColumnElement[bool] = shared_limits.c.full_at <= now
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
    """The SQLite file of the buckets beside `engine`'s (one engine a file, per process)."""
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
                connection.execute(CreateTable(shared_limits, if_not_exists=True))
                for index in shared_limits.indexes:
                    connection.execute(CreateIndex(index, if_not_exists=True))
            _sidecars[path] = opened
        return _sidecars[path]
