"""What the engine remembers between ticks, and what it asks of the contacts as a whole.

A cursor per campaign (and one for the score rules) says how far its trigger has been read,
or that a broadcast is done; the time zones in use tell per-zone work (local-time broadcasts,
birthdays) which zones to consider."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, func, select

from mailer.store.tables import contacts, lists, memberships, trigger_cursors
from mailer.store.upsert import upsert


def seen_until(connection: Connection, name: str) -> datetime | None:
    """How far `name` has been read; None before its first tick."""
    moment: datetime | None = connection.scalar(
        select(trigger_cursors.c.seen_until).where(trigger_cursors.c.campaign == name)
    )
    return moment


def remember(connection: Connection, name: str, moment: datetime) -> None:
    upsert(connection, trigger_cursors, [{"campaign": name, "seen_until": moment}],
           keys=("campaign",), update=("seen_until",))  # fmt: skip


def events_read(connection: Connection, name: str) -> tuple[int | None, int | None]:
    """An event trigger's cursor: the id to read after, and the highest id read so far."""
    row = connection.execute(
        select(trigger_cursors.c.events_from, trigger_cursors.c.events_to)
        .where(trigger_cursors.c.campaign == name)
    ).first()  # fmt: skip
    return (None, None) if row is None else (row.events_from, row.events_to)


def remember_events(connection: Connection, name: str, moment: datetime, read_after: int,
                    read_to: int) -> None:  # fmt: skip
    upsert(connection, trigger_cursors,
           [{"campaign": name, "seen_until": moment, "events_from": read_after,
             "events_to": read_to}],
           keys=("campaign",), update=("seen_until", "events_from", "events_to"))  # fmt: skip


def zones_in_use(connection: Connection, list_name: str, default: str) -> list[str]:
    """The time zones of the list's members (`default` for those without one)."""
    rows = connection.execute(
        select(func.coalesce(contacts.c.timezone, default)).distinct()
        .join(memberships, memberships.c.contact_id == contacts.c.id)
        .join(lists, and_(lists.c.id == memberships.c.list_id, lists.c.name == list_name))
    )  # fmt: skip
    return sorted(row[0] for row in rows)
