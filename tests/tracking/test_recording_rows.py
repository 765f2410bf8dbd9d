"""`record_hits` inserts a batch through a statement compiled once per database, with each
row's JSON and time converted as it is built: the rows hold what SQLAlchemy's own insert of
the same values holds, on SQLite and PostgreSQL, whatever zone a hit's time is given in."""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, delete, select

from mailer.store.tables import events
from mailer.tracking.hits import Hit
from mailer.tracking.recording import EVENT_COLUMNS, record_hits
from mailer.workspace import Workspace
from tests.tracking.test_recording import CHROME, Sent, message


def held(workspace: Workspace) -> list[tuple[Any, ...]]:
    """The events' columns as the database driver returns them, in recording order."""
    with workspace.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").all()  # fmt: skip
    return [tuple(row) for row in rows]


def test_recorded_rows_hold_what_sqlalchemys_own_insert_holds(sent: Sent) -> None:
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    first = sent_at + timedelta(minutes=5, microseconds=123_456)
    india, new_york = timezone(timedelta(hours=5, minutes=30)), ZoneInfo("America/New_York")
    cups, agent = links["https://shop.example/cups"], "Zoë's reader ✓ " + "x" * 400
    hits = [  # (kind, link, seconds after the first, zone, user agent, address, method)
        Hit(kind, key, link, (first + timedelta(seconds=after)).astimezone(zone), *request)  # type: ignore[arg-type]
        for kind, link, after, zone, *request in (
            ("open", None, 0, UTC, CHROME, "198.51.100.7", "GET"),  # a person's
            ("open", None, 70, india, CHROME, "2001:db8::1", "GET"),  # a reopen
            ("click", cups, 30, new_york, agent, "203.0.113.9", "GET"),  # 300 characters kept
            ("click", 99, 300, UTC, "curl/8.0", "", "HEAD"),  # no such link: no URL
            ("open", None, 479.876_544, UTC, "", "", "GET"),  # a whole second
        )
    ]
    with workspace.engine.begin() as connection:
        assert record_hits(connection, workspace.settings, workspace.key, hits) == len(hits)
    recorded = held(workspace)
    assert [row[1] for row in recorded] == ["open", "open", "click", "machine_click",
                                            "machine_open"]  # fmt: skip
    with workspace.engine.begin() as connection:
        rows = [row._asdict() for row in connection.execute(
            select(*(events.c[name] for name in EVENT_COLUMNS)).order_by(events.c.id))]  # fmt: skip
        connection.execute(delete(events))
        connection.execute(events.insert(), rows)
    again = held(workspace)
    # JSON text as written by the batch (non-ASCII kept); the same document either way.
    assert [row[:4] + row[5:] for row in again] == [row[:4] + row[5:] for row in recorded]
    documents = [row[4] if isinstance(row[4], dict) else json.loads(row[4]) for row in recorded]
    assert documents == [row[4] if isinstance(row[4], dict) else json.loads(row[4])
                         for row in again]  # fmt: skip
    assert documents[2]["user_agent"] == agent[:300]
    assert documents[3]["url"] is None and documents[3]["machine"] == "command-line tool (curl)"
    if workspace.engine.dialect.name == "sqlite":
        assert [row[4] for row in recorded] == [json.dumps(document, ensure_ascii=False)
                                                for document in documents]  # fmt: skip
        # Times as SQLAlchemy's own SQLite type writes the UTC time ("2026-11-23 10:00:00.000000").
        dialect = workspace.engine.dialect
        text = DateTime().dialect_impl(dialect).bind_processor(dialect)
        assert text is not None
        utc = [hit.at.astimezone(UTC).replace(tzinfo=None) for hit in hits]
        assert [row[5] for row in recorded] == [text(at) for at in utc]
    else:
        assert [row[5] for row in recorded] == [hit.at for hit in hits]
