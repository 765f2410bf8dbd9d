"""Each batch of opens and clicks is written once. The serving process names every batch it
hands the writer (`new_batch_id`) and sends a failed batch again under the same name; the
writer stores the name in the batch's own transaction (`hit_batches`). A COMMIT that reached
the database while its connection was cut (the database restarting, a network cut) looks failed
to the serving process: sent again, the batch is found written and is not stored twice.

Names are kept for `KEPT`: a batch retried after longer (the database away for more than a
day, having committed it just before) would be written again."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select

from mailer.store.tables import hit_batches

KEPT = timedelta(days=1)
FORGET_EVERY = 1_000  # batches a writer process is given between two deletions of old names


def new_batch_id() -> str:
    return uuid.uuid4().hex


def written_before(connection: Connection, batch: str) -> int | None:
    """How many events `batch` stored, if it was committed already; None if not."""
    return connection.scalar(select(hit_batches.c.written).where(hit_batches.c.id == batch))


def mark_written(connection: Connection, batch: str, written: int, now: datetime) -> None:
    """In the batch's transaction: it is written (with it, or not at all)."""
    connection.execute(insert(hit_batches).values(id=batch, written=written, committed_at=now))


def forget_old(connection: Connection, now: datetime) -> int:
    """Delete the names of batches committed more than `KEPT` ago."""
    old = hit_batches.c.committed_at < now - KEPT
    return connection.execute(delete(hit_batches).where(old)).rowcount
