"""A retention run that deletes as many rows as a big import writes ends, as the import and the
tick do, with ANALYZE of the tables it changed (PostgreSQL: autovacuum may be off or late, and
the next queries would be planned for the events as they were). A small run does not, and
SQLite, whose planner mailer gives no statistics, never does."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, delete, insert, select, text

from mailer.retention import run_retention
from mailer.store.statistics import ANALYZE_FROM_ROWS
from mailer.store.tables import events, outbox, trigger_cursors
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import queue_welcome

OLD = NOW - timedelta(days=900)  # past the default 400 days of [retention] events_after
CHANGED = ("events", "event_rollups")


def old_opens(workspace: Workspace, project: Path, count: int) -> None:
    """Ada was queued the welcome message; `count` opens of it, all older than retention keeps,
    and read by every trigger (no cursor holds them back)."""
    queue_welcome(workspace, project, "ada@example.com,Ada")
    with workspace.engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # what autovacuum would do is not the test
            for table in CHANGED:
                connection.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        message = connection.execute(select(outbox.c.id, outbox.c.contact_id)).one()
        connection.execute(delete(trigger_cursors))
        connection.execute(insert(events), [
            {"contact_id": message.contact_id, "kind": "open", "name": "welcome", "step": "hello",
             "properties": {}, "occurred_at": OLD + timedelta(seconds=n), "outbox_id": message.id}
            for n in range(count)])  # fmt: skip


def estimated_rows(connection: Connection, table: str) -> float:
    """What the planner believes (pg_class.reltuples): -1 before the table's first ANALYZE."""
    return float(connection.scalar(text("SELECT reltuples FROM pg_class WHERE oid = "
                                        "to_regclass(:table)"), {"table": table}))  # fmt: skip


def refreshed(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records
            if record.getMessage().startswith("statistics refreshed")]  # fmt: skip


def test_a_large_roll_up_analyzes_the_tables_it_changed_on_postgresql(
    workspace: Workspace, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_opens(workspace, project, ANALYZE_FROM_ROWS)
    with caplog.at_level(logging.INFO, logger="mailer"):
        pruned = run_retention(workspace.engine, workspace.settings, NOW)
    assert pruned.opens_and_clicks == ANALYZE_FROM_ROWS
    if workspace.engine.dialect.name != "postgresql":
        assert refreshed(caplog) == []
        with workspace.engine.connect() as connection:  # never ANALYZE'd: no statistics table
            assert connection.scalar(text("SELECT count(*) FROM sqlite_master "
                                          "WHERE name LIKE 'sqlite_stat%'")) == 0  # fmt: skip
        return
    [logged] = refreshed(caplog)
    assert logged.getMessage() == "statistics refreshed after the retention run (ANALYZE)"
    assert (logged.__dict__["rows"], logged.__dict__["tables"]) == (
        ANALYZE_FROM_ROWS, ", ".join(CHANGED))  # fmt: skip
    with workspace.engine.connect() as connection:  # the planner knows the rows are gone
        assert estimated_rows(connection, "events") == 0
        assert estimated_rows(connection, "event_rollups") == 1  # one message, one day


def test_a_small_roll_up_runs_no_analyze(
    workspace: Workspace, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_opens(workspace, project, 20)
    with caplog.at_level(logging.INFO, logger="mailer"):
        pruned = run_retention(workspace.engine, workspace.settings, NOW)
    assert pruned.opens_and_clicks == 20
    assert refreshed(caplog) == []
    if workspace.engine.dialect.name == "postgresql":
        with workspace.engine.connect() as connection:
            assert estimated_rows(connection, "events") == -1  # never analyzed
