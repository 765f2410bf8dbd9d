"""reader_beside: another connection reads for a transaction only where it sees what the
transaction sees (PostgreSQL, READ COMMITTED, nothing written but the tables the reads leave
alone, no temporary table); else the transaction's own connection reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, insert, select, text

from mailer.store.side_reads import reader_beside, sees_alike
from mailer.store.tables import contacts, trigger_cursors
from mailer.workspace import Workspace

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
UNREAD = ("trigger_cursors",)


def add_contact(workspace: Workspace, email: str) -> None:
    with workspace.engine.begin() as connection:
        connection.execute(insert(contacts).values(email=email, attributes={}, created_at=NOW,
                                                   updated_at=NOW))  # fmt: skip


def emails(connection: Connection) -> list[str]:
    return list(connection.scalars(select(contacts.c.email).order_by(contacts.c.email)))


def test_a_transaction_that_wrote_only_unread_tables_is_read_beside(
    workspace: Workspace,
) -> None:
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("another connection reads beside on PostgreSQL only")
    add_contact(workspace, "ana@example.com")
    with workspace.engine.begin() as connection:
        connection.execute(insert(trigger_cursors).values(campaign="welcome", seen_until=NOW))
        assert sees_alike(connection, UNREAD)
        with reader_beside(connection, UNREAD) as reader:
            assert reader is not connection
            assert emails(reader) == ["ana@example.com"]
        add_contact(workspace, "bob@example.com")  # committed by another: both see it
        with reader_beside(connection, UNREAD) as reader:
            assert reader is not connection and emails(reader) == emails(connection)


def test_a_transaction_that_wrote_what_is_read_reads_itself(workspace: Workspace) -> None:
    with workspace.engine.begin() as connection:
        connection.execute(insert(contacts).values(email="ana@example.com", attributes={},
                                                   created_at=NOW, updated_at=NOW))  # fmt: skip
        assert not sees_alike(connection, UNREAD)
        with reader_beside(connection, UNREAD) as reader:
            assert reader is connection
            assert emails(reader) == ["ana@example.com"]


def test_a_snapshot_or_a_temporary_table_is_read_by_its_own_connection(
    workspace: Workspace,
) -> None:
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite always reads on the transaction's connection (tested above)")
    options = {"isolation_level": "REPEATABLE READ"}
    with workspace.engine.connect().execution_options(**options) as connection, \
            connection.begin():  # fmt: skip
        assert not sees_alike(connection, UNREAD)
    with workspace.engine.begin() as connection:
        connection.exec_driver_sql(
            'CREATE TEMPORARY TABLE "contacts" (LIKE contacts) ON COMMIT DROP'  # as `mailer plan`
        )
        assert not sees_alike(connection, UNREAD)
        with reader_beside(connection, UNREAD) as reader:
            assert reader is connection


def test_no_reader_beside_when_the_pool_has_no_room(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick must not wait for a connection that delivery holds."""
    pool = workspace.engine.pool
    monkeypatch.setattr(pool, "size", lambda: 1)
    with workspace.engine.begin() as connection:
        connection.execute(text("SELECT 1"))
        with reader_beside(connection, UNREAD) as reader:
            assert reader is connection
