"""`Idempotency-Key` on `POST /events`: a website that sends a request again because its answer
was lost (a timeout, a cut connection) sends the same key, and gets the first answer back
instead of its events recorded twice. The key is stored with a digest of the request's body and
the answer, in the transaction that records the events (table `request_keys`), and kept a day.
The same key with another body is refused: a key names one request."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from mailer.store.tables import request_keys

KEPT = timedelta(days=1)
FORGET_EVERY = 1_000  # keyed requests a process records between two deletions of old keys
SHAPE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII without spaces, as most APIs take


class KeyReused(Exception):
    """The key was stored with another body."""


@dataclass(frozen=True)
class RequestKey:
    key: str
    digest: str  # SHA-256 of the request's body, hex


def request_key(header: str | None, body: bytes) -> RequestKey | None:
    """The request's key and its body's digest, None without the header; ValueError when the
    key is not 1 to 255 printable ASCII characters."""
    if header is None:
        return None
    if not SHAPE.fullmatch(header):
        raise ValueError("Idempotency-Key must be 1 to 255 printable ASCII characters, no spaces")
    return RequestKey(header, hashlib.sha256(body).hexdigest())


def answered_before(connection: Connection, key: RequestKey) -> dict[str, Any] | None:
    """The answer given to the request `key` named, or None if none was; KeyReused when
    that request had another body."""
    row = connection.execute(
        select(request_keys.c.digest, request_keys.c.answer).where(request_keys.c.key == key.key)
    ).one_or_none()  # fmt: skip
    if row is None:
        return None
    if row.digest != key.digest:
        raise KeyReused(key.key)
    answer: dict[str, Any] = json.loads(row.answer)
    return answer


def remember(connection: Connection, key: RequestKey, answer: dict[str, Any],
             now: datetime) -> None:  # fmt: skip
    """In the request's transaction: its answer, for the same request sent again."""
    connection.execute(insert(request_keys).values(
        key=key.key, digest=key.digest, answer=json.dumps(answer), answered_at=now))  # fmt: skip


def forget_old(connection: Connection, now: datetime) -> int:
    """Delete the keys answered more than `KEPT` ago."""
    return connection.execute(
        delete(request_keys).where(request_keys.c.answered_at < now - KEPT)
    ).rowcount
