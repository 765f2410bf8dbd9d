"""The suppression list: addresses never to be mailed again, kept by keyed hash so that an
erased person stays suppressed without their address being stored."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, select

from mailer.store.bulk import one_of
from mailer.store.tables import suppressions
from mailer.store.upsert import upsert

Reason = Literal["unsubscribed", "complained", "hard_bounce", "erased", "admin"]


def suppress(
    connection: Connection,
    *,
    address_hash: str,
    email: str | None,
    reason: Reason,
    now: datetime,
    entry_id: int | None = None,
    detail: str | None = None,
) -> None:
    """Add the address; an address already suppressed keeps its first reason."""
    row = {
        "address_hash": address_hash,
        "email": email,
        "reason": reason,
        "detail": detail,
        "created_at": now,
        "entry_id": entry_id,
    }
    upsert(connection, suppressions, [row], keys=("address_hash",))


def suppressed(connection: Connection, address_hashes: Iterable[str]) -> dict[str, str]:
    """The reason each of `address_hashes` is suppressed, for those that are."""
    rows = connection.execute(
        select(suppressions.c.address_hash, suppressions.c.reason).where(
            one_of(connection, suppressions.c.address_hash, address_hashes)
        )
    )
    return {row.address_hash: row.reason for row in rows}
