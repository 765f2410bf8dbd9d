"""insert_new: many rows in one statement (PostgreSQL) or one executemany (SQLite), the rows
whose keys are taken left as they are, times and NULLs kept exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, delete, select, text
from sqlalchemy.exc import IntegrityError

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


def add_contacts(connection: Connection, count: int) -> None:
    connection.execute(text(
        "INSERT INTO contacts (id, email, attributes, created_at, updated_at) "
        "VALUES " + ", ".join(f"({i}, 'c{i}@example.com', '{{}}', :at, :at)"
                              for i in range(1, count + 1))
    ), {"at": NOW.replace(tzinfo=None).isoformat(" ")})  # fmt: skip


def test_ids_follow_the_order_of_the_rows(workspace: Workspace) -> None:
    count = 2 * FEW
    with workspace.engine.begin() as connection:
        add_contacts(connection, count)
        insert_new(connection, outbox, [message(i, "queued", NOW) for i in range(count, 0, -1)],
                   KEYS)  # fmt: skip
        by_id = connection.scalars(select(outbox.c.contact_id).order_by(outbox.c.id)).all()
    assert by_id == list(range(count, 0, -1))


def test_calls_in_one_transaction_and_after_a_rolled_back_savepoint(workspace: Workspace) -> None:
    """On PostgreSQL the rows pass through a temporary table of the transaction: each call
    writes its own rows only (not the earlier call's again, here deleted meanwhile), one undone
    with its savepoint leaves nothing, and the table is gone with the transaction."""
    with workspace.engine.begin() as connection:
        add_contacts(connection, 4 * FEW)
        insert_new(connection, outbox, [message(i, "queued", NOW) for i in range(1, FEW + 1)],
                   KEYS)  # fmt: skip
        first = connection.scalars(select(outbox.c.contact_id)).all()
        connection.execute(delete(outbox))
        with pytest.raises(RuntimeError), connection.begin_nested():
            undone = [message(i, "sent", NOW) for i in range(FEW + 1, 2 * FEW + 1)]
            insert_new(connection, outbox, undone, KEYS)
            raise RuntimeError("undone")
        later = NOW + timedelta(hours=1)
        kept = [message(i, "queued", later) for i in range(2 * FEW + 1, 4 * FEW + 1)]
        insert_new(connection, outbox, kept, KEYS)
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(outbox.c.contact_id, outbox.c.status, outbox.c.queued_at)
        ).all()  # fmt: skip
        if connection.dialect.name == "postgresql":
            staged = "SELECT to_regclass('pg_temp.insert_new_outbox')"
            assert connection.exec_driver_sql(staged).scalar() is None
    assert sorted(first) == list(range(1, FEW + 1))
    assert sorted(row.contact_id for row in rows) == list(range(2 * FEW + 1, 4 * FEW + 1))
    assert {(row.status, row.queued_at) for row in rows} == {("queued", later)}


def test_a_naive_time_is_refused(workspace: Workspace) -> None:
    with workspace.engine.begin() as connection:
        add_contacts(connection, FEW)
        naive = NOW.replace(tzinfo=None)
        with pytest.raises(Exception, match="naive datetime"):
            insert_new(connection, outbox,
                       [message(i, "queued", naive) for i in range(1, FEW + 1)], KEYS)  # fmt: skip


@pytest.mark.parametrize("count", [3, 3 * FEW])
def test_untaken_rows_go_straight_in_in_their_order(workspace: Workspace, count: int) -> None:
    """Rows the caller knows to be new are written as they are (a COPY into the table itself
    on PostgreSQL), their ids in their order, times and NULLs kept."""
    with workspace.engine.begin() as connection:
        add_contacts(connection, count)
        rows = [message(i, "queued", NOW) for i in range(count, 0, -1)]
        insert_new(connection, outbox, rows, KEYS, untaken=True)
        insert_new(connection, outbox, [], KEYS, untaken=True)
        written = connection.execute(
            select(outbox.c.contact_id, outbox.c.status, outbox.c.variant, outbox.c.queued_at,
                   outbox.c.send_after, outbox.c.reason).order_by(outbox.c.id)
        ).all()  # fmt: skip
        staged = "SELECT to_regclass('pg_temp.insert_new_outbox')"
        if connection.dialect.name == "postgresql":
            assert connection.exec_driver_sql(staged).scalar() is None  # no staging table
    assert [row.contact_id for row in written] == list(range(count, 0, -1))
    assert tuple(written[-1]) == (1, "queued", "B", NOW, NOW, None)
    assert tuple(written[-2]) == (2, "queued", None, NOW, NOW, None)


@pytest.mark.parametrize("count", [3, 3 * FEW])
def test_an_untaken_row_whose_key_is_taken_raises(workspace: Workspace, count: int) -> None:
    """`untaken` is the caller's promise: a taken key is an IntegrityError (the caller's
    savepoint undoes the rest), not a row silently left out."""
    with workspace.engine.begin() as connection:
        add_contacts(connection, count)
        insert_new(connection, outbox, [message(count, "sent", NOW)], KEYS)
        with pytest.raises(IntegrityError), connection.begin_nested():
            rows = [message(i, "queued", NOW) for i in range(1, count + 1)]
            insert_new(connection, outbox, rows, KEYS, untaken=True)
        statuses = connection.scalars(select(outbox.c.status)).all()
    assert statuses == ["sent"]
