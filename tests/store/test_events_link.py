"""events.link (migration 0024): a click's link index, computed by the database from its
properties for every row whoever writes it, clicks stored before the migration too; NULL for
other kinds, whose "link" property may be anything (a website event's URL is still taken)."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import insert, select

from mailer.store.engine import _alembic_config, create_database_engine, open_database
from mailer.store.tables import contacts, events
from tests.conftest import NOW


def event_row(kind: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"contact_id": 1, "kind": kind, "name": "welcome", "step": "s1",
            "properties": properties, "occurred_at": NOW, "outbox_id": 7}  # fmt: skip


ROWS = [
    event_row("click", {"user_agent": "Firefox", "ip": "", "link": 2, "url": "https://a.example"}),
    event_row("machine_click", {"user_agent": "curl/8", "link": 0, "machine": "honeypot"}),
    event_row("open", {"user_agent": "Firefox", "ip": ""}),
    event_row("website", {"link": "https://shop.example/cups"}),  # anyone's properties
]


def test_clicks_stored_before_and_after_the_migration_have_their_link(database_url: str) -> None:
    with create_database_engine(database_url).begin() as connection:
        command.upgrade(_alembic_config(connection), "0023")
        connection.execute(insert(contacts).values(id=1, email="ada@example.com", attributes={},
                                                   created_at=NOW, updated_at=NOW))  # fmt: skip
        connection.execute(insert(events), ROWS)  # before events.link exists
    engine = open_database(database_url)
    with engine.begin() as connection:
        connection.execute(insert(events), ROWS)  # the column is the database's to fill
        stored = connection.execute(select(events.c.kind, events.c.link).order_by(events.c.id))
        assert stored.all() == [("click", 2), ("machine_click", 0), ("open", None),
                                ("website", None)] * 2  # fmt: skip
    engine.dispose()
