"""Many processes on one PostgreSQL: who does the once-per-tick work (an advisory lock), row
locks taken in one order, and a transaction that lost a deadlock tried again. On SQLite every
write transaction holds the one write lock (BEGIN IMMEDIATE), so each of these is a no-op there.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Engine, Select, select, text
from sqlalchemy.exc import DBAPIError

from mailer.logs import logger
from mailer.store.engine import ENROLLER_LOCK

T = TypeVar("T")

# SQLSTATEs of a transaction PostgreSQL rolled back so that another could go on: deadlock
# detected, serialization failure. Run again, it succeeds.
LOST_A_RACE = ("40P01", "40001")
ATTEMPTS = 5
FIRST_PAUSE = 0.02  # seconds before the second attempt; doubled each time, jittered ±50%

# What the log says of this process: two daemons on two hosts may share a pid.
PROCESS = f"{socket.gethostname()}:{os.getpid()}"
_was_enroller: bool | None = None  # this process's answer at its last tick


def take_enroller_lock(connection: Connection) -> bool:
    """True when this transaction may do the once-per-tick work (enrolling, queueing
    broadcasts, score rules, consent expiry): PostgreSQL's advisory lock, held until the
    transaction ends, or until the process dies (its session ends with it). False at once
    when another process holds it. The key pairs ENROLLER_LOCK with the schema's hash, so that
    two mailers in two schemas of one database (or two tests) do not take turns."""
    if connection.dialect.name != "postgresql":
        return True
    taken = connection.scalar(
        text("SELECT pg_try_advisory_xact_lock(:key, hashtext(current_schema()))"),
        {"key": ENROLLER_LOCK},
    )
    global _was_enroller
    changed, _was_enroller = bool(taken) != _was_enroller, bool(taken)
    # At info when the role changes (the first tick, a takeover), so the log shows who enrolls.
    logger.log(logging.INFO if changed else logging.DEBUG,
               "this process enrolls (enroller lock taken)" if taken else "another process "
               "enrolls (enroller lock held): enrollment skipped this tick",
               extra={"worker": PROCESS})  # fmt: skip
    return bool(taken)


def lock_in_order(connection: Connection, table: Any, where: ColumnElement[bool]) -> None:
    """Lock the rows of `table` that `where` picks (FOR NO KEY UPDATE, what an UPDATE takes)
    in id order, before writing them: two transactions writing the same rows then wait for
    each other instead of each holding a row the other needs (a deadlock)."""
    if connection.dialect.name == "postgresql":
        connection.execute(_locking_in_id_order(table, where)).all()


def picked_in_order(connection: Connection, table: Any, where: ColumnElement[bool]
                    ) -> ColumnElement[bool]:  # fmt: skip
    """`where`, for an UPDATE of `table` that may pick many rows: on PostgreSQL, the rows are
    locked in id order before they are written (lock_in_order in the same statement), where
    the UPDATE alone would lock them in the order it scans them."""
    if connection.dialect.name != "postgresql":
        return where
    id_: ColumnElement[int] = table.c.id
    return id_.in_(_locking_in_id_order(table, where).correlate(None))


def _locking_in_id_order(table: Any, where: ColumnElement[bool]) -> Select[tuple[int]]:
    """The ids of the rows `where` picks, each locked (FOR NO KEY UPDATE) in id order."""
    return (select(table.c.id).where(where).order_by(table.c.id)
            .with_for_update(key_share=True))  # fmt: skip


def lost_a_race(error: BaseException) -> bool:
    """Whether PostgreSQL rolled the transaction back as a deadlock's or a serialization's
    victim: the same work, run again, succeeds."""
    cause = error.orig if isinstance(error, DBAPIError) else None
    return getattr(cause, "sqlstate", None) in LOST_A_RACE


def retried(engine: Engine, work: Callable[[Connection], T], what: str, contacts: int) -> T:
    """`work` in a transaction of its own; run again (a new transaction) up to ATTEMPTS times
    when PostgreSQL chose it as a deadlock's victim, after a short jittered pause so that the
    two do not meet again. Each retry is logged with `what` and the number of contacts."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                return work(connection)
        except DBAPIError as error:
            if not lost_a_race(error):
                raise
            reason = str(error.orig).partition("\n")[0]  # "deadlock detected", no DETAIL
            fields = {"what": what, "contacts": contacts, "attempt": attempt, "reason": reason}
            if attempt == ATTEMPTS:
                logger.error("deadlock: gave up", extra=fields)
                raise
            pause = FIRST_PAUSE * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            logger.warning(
                "deadlock: trying again", extra={**fields, "pause_ms": round(pause * 1000)}
            )
            time.sleep(pause)
    raise AssertionError("unreachable")  # the loop returns or raises
