"""Work done once however often it is asked, for callers that cannot tell whether their first
try was done: a website whose `POST /events` answer was lost, the tracking endpoint whose batch
write saw its COMMIT's answer lost. Each try names the work (`Once`: a name in its caller's
namespace, `events:KEY` or `hits:BATCH`, and a digest of what it was asked with); the name
and the answer are stored in the work's own transaction (table `idempotency_keys`), so a try
that failed leaves nothing, and one that was done is answered again instead of done twice.
The same name with another digest is refused (`KeyReused`). Names are kept `KEPT`: a try
repeated after longer is done again."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from mailer.store.tables import idempotency_keys

KEPT = timedelta(days=1)
FORGET_EVERY = 1_000  # names a process stores between two deletions of old ones
_remembered = 0  # names this process stored


class KeyReused(Exception):
    """The name was stored with another digest."""


@dataclass(frozen=True)
class Once:
    name: str  # "events:KEY", "hits:BATCH"
    digest: str = ""  # of what the work was asked with (SHA-256 hex), "" where none is needed


def done_once(connection: Connection, once: Once, work: Callable[[], dict[str, Any]],
              now: datetime) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """In the work's transaction: the answer given before to `once`'s name, and True; else
    `work`'s answer, stored, and False. KeyReused when the name was stored with another
    digest."""
    before = answered_before(connection, once)
    if before is not None:
        return before, True
    answer = work()
    remember(connection, once, answer, now)
    return answer, False


def answered_before(connection: Connection, once: Once) -> dict[str, Any] | None:
    """The answer stored for `once`'s name, or None; KeyReused when stored with another
    digest."""
    row = connection.execute(
        select(idempotency_keys.c.digest, idempotency_keys.c.answer)
        .where(idempotency_keys.c.key == once.name)
    ).one_or_none()  # fmt: skip
    if row is None:
        return None
    if row.digest != once.digest:
        raise KeyReused(once.name)
    answer: dict[str, Any] = json.loads(row.answer)
    return answer


def remember(connection: Connection, once: Once, answer: dict[str, Any], now: datetime) -> None:
    """In the work's transaction: its answer, for the same work asked again. Every
    `FORGET_EVERY` names (the first included), the names older than `KEPT` go."""
    global _remembered
    connection.execute(insert(idempotency_keys).values(
        key=once.name, digest=once.digest, answer=json.dumps(answer), answered_at=now))  # fmt: skip
    _remembered += 1
    if _remembered % FORGET_EVERY == 1:
        forget_old(connection, now)


def forget_old(connection: Connection, now: datetime) -> int:
    """Delete the names stored more than `KEPT` before `now`."""
    old = idempotency_keys.c.answered_at < now - KEPT
    return connection.execute(delete(idempotency_keys).where(old)).rowcount
