"""Counts of events per UTC day (`event_rollups`, `website_rollups`), added to row by row:
by retention's roll-ups of old raw events (retention.py), and by the tracking writer, which
counts a pixel fetched again instead of storing it (tracking/recording.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, case
from sqlalchemy.dialects import postgresql, sqlite

from mailer.store.bulk import execute_many

# event_rollups.kind of the pixels fetched again within a minute of the message's last open
# (rule 8 of tracking/bots.py): counted per message and day, with the latest, never stored
# one by one; reports count them among the machines' opens.
REFETCHES = "refetch"


def utc_day(moment: datetime) -> str:
    """The UTC date, as the report's timeline groups by it."""
    return moment.astimezone(UTC).date().isoformat()


def utc_days(since: datetime, until: datetime) -> list[str]:
    """Every UTC date from `since`'s to `until`'s, both included."""
    first, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def add_counts(connection: Connection, table: Table, keys: tuple[str, ...],
               rows: Sequence[dict[str, Any]]) -> None:  # fmt: skip
    """Insert the count rows, or add them to those of the same `keys` (keeping the later
    `last_at`, where the table has one). Callers sort `rows` by `keys`: two transactions on
    PostgreSQL then lock shared rows in one order, and neither waits for the other in a cycle."""
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    changes: dict[str, Any] = {"events": table.c.events + statement.excluded.events}
    if "last_at" in table.c:
        later = statement.excluded.last_at > table.c.last_at
        changes["last_at"] = case((later, statement.excluded.last_at), else_=table.c.last_at)
    execute_many(connection, statement.on_conflict_do_update(index_elements=list(keys),
                                                              set_=changes), rows)  # fmt: skip
