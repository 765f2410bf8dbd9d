"""insert_new: many rows in one statement (PostgreSQL) or one executemany (SQLite), the rows
whose keys are taken left as they are, times and NULLs kept exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from mailer.store.tables import outbox
from mailer.store.upsert import FEW, insert_new
from mailer.workspace import Workspace

KEYS = ("campaign", "step", "contact_id", "cycle")
NOW = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)


def message(contact_id: int, status: str, at: datetime) -> dict[str, object]:
    return {"campaign": "drip", "step": "hello", "contact_id": contact_id, "cycle": 0,
            "enrollment_id": None, "variant": "B" if contact_id % 2 else None,
            "status": status, "reason": None, "consent_entry_id": None, "queued_at": at,
            "send_after": at if status == "queued" else None}  # fmt: skip


def test_many_rows_go_in_and_a_taken_key_keeps_its_row(workspace: Workspace) -> None:
    count = 3 * FEW
    with workspace.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO contacts (id, email, attributes, created_at, updated_at) "
            "VALUES " + ", ".join(f"({i}, 'c{i}@example.com', '{{}}', :at, :at)"
                                  for i in range(1, count + 1))
        ), {"at": NOW.replace(tzinfo=None).isoformat(" ")})  # fmt: skip
        insert_new(connection, outbox, [message(1, "sent", NOW - timedelta(days=1))], KEYS)
        insert_new(connection, outbox, [message(i, "queued", NOW) for i in range(1, count + 1)],
                   KEYS)  # fmt: skip
        rows = connection.execute(
            select(outbox.c.contact_id, outbox.c.status, outbox.c.variant, outbox.c.queued_at,
                   outbox.c.send_after).order_by(outbox.c.contact_id)
        ).all()  # fmt: skip
    assert len(rows) == count
    assert tuple(rows[0]) == (1, "sent", "B", NOW - timedelta(days=1), None)
    assert tuple(rows[1]) == (2, "queued", None, NOW, NOW)
    assert {row.queued_at for row in rows[1:]} == {NOW}
