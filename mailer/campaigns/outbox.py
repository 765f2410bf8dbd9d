"""Reading the outbox: what was queued for whom, what was sent when, and why something was
skipped, deferred or failed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from mailer.contacts.addresses import normalise_address
from mailer.store.tables import contacts, outbox


def outbox_rows(connection: Connection, email: str | None, limit: int) -> list[dict[str, Any]]:
    query = (select(outbox.c.queued_at, outbox.c.sent_at, contacts.c.email, outbox.c.campaign,
                    outbox.c.step, outbox.c.variant, outbox.c.status, outbox.c.attempts,
                    outbox.c.reason, outbox.c.reply, outbox.c.relay,
                    outbox.c.message_id)
             .outerjoin(contacts, contacts.c.id == outbox.c.contact_id))  # fmt: skip
    if email is not None:
        query = query.where(contacts.c.email == normalise_address(email))
    newest = query.order_by(outbox.c.queued_at.desc(), outbox.c.id.desc()).limit(limit)
    rows = [dict(row._mapping) for row in connection.execute(newest)]
    for row in rows:
        row["queued_at"] = row["queued_at"].isoformat()
        row["sent_at"] = row["sent_at"].isoformat() if row["sent_at"] else None
    return rows[::-1]
