"""The outbox's indexes, as the queries that need them see them: each query's plan (EXPLAIN on
both engines) over an outbox of months of sent messages, large enough that PostgreSQL's planner
would rather scan the table than use a poor index. Migration 0023 dropped (status, queued_at)
and keeps only sent rows in the sent_at index, so the enroll tick's queued rows enter neither;
every reader of what they served still finds its rows through an index. It also indexes the
Message-ID (sent rows only), which returns matching read by scanning the whole outbox."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, inspect, text

from mailer.consent.audit import Period, sent_messages
from mailer.delivery.claims import claim
from mailer.delivery.retry import FailedMessages, passed_by, requeue_failed
from mailer.retention import run_retention
from mailer.returns.breakers import readings
from mailer.returns.matching import match
from mailer.returns.report import Returned
from mailer.store.tables import contacts, outbox
from mailer.workspace import Workspace
from tests.conftest import NOW

CONTACTS, PER_CONTACT = 2_000, 10  # 20,000 messages over SENT_OVER
SENT_OVER = timedelta(days=90)


def fill(connection: Connection) -> None:
    """CONTACTS contacts with PER_CONTACT messages each, sent evenly over SENT_OVER before NOW,
    except one in 50 still queued and one in 100 failed (no sent_at)."""
    connection.execute(insert(contacts), [
        {"id": n, "email": f"c{n}@example.com", "attributes": {}, "created_at": NOW - SENT_OVER,
         "updated_at": NOW - SENT_OVER}
        for n in range(1, CONTACTS + 1)])  # fmt: skip
    total = CONTACTS * PER_CONTACT
    rows = []
    for n in range(total):
        status = "queued" if n % 50 == 0 else "failed" if n % 100 == 1 else "sent"
        at = NOW - SENT_OVER * (1 - n / total)
        rows.append({"campaign": "welcome", "step": f"s{n % PER_CONTACT}", "cycle": 0,
                     "contact_id": n // PER_CONTACT + 1, "status": status, "queued_at": at,
                     "send_after": NOW if status == "queued" else at,
                     "sent_at": at if status == "sent" else None,
                     "message_id": f"<m{n}@acme.example>" if status == "sent" else None,
                     "links": "[]" if status == "sent" else None})  # fmt: skip
    connection.execute(insert(outbox), rows)
    if connection.dialect.name == "postgresql":  # as autovacuum would; mailer runs none on SQLite
        connection.execute(text("ANALYZE contacts"))
        connection.execute(text("ANALYZE outbox"))


@contextmanager
def plans(target: Engine | Connection) -> Iterator[list[tuple[str, str]]]:
    """(statement, its plan) for every statement run on `target` meanwhile."""
    found: list[tuple[str, str]] = []

    def explained(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> Any:
        sqlite = conn.dialect.name == "sqlite"
        plain = conn.connection.cursor()  # `cursor` may be a server-side one (yield_per)
        plain.execute(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters)
        found.append((statement, "\n".join(str(row[-1]) for row in plain.fetchall())))
        plain.close()
        return statement, parameters

    event.listen(target, "before_cursor_execute", explained, retval=True)
    try:
        yield found
    finally:
        event.remove(target, "before_cursor_execute", explained)


def outbox_plans(found: list[tuple[str, str]], *words: str) -> list[str]:
    """The plans of the statements that read outbox and say each of `words`."""
    return [plan for statement, plan in found
            if "outbox" in statement and all(word in statement for word in words)]  # fmt: skip


def assert_uses(plan: str, index: str) -> None:
    assert index in plan, plan
    assert "Seq Scan on outbox" not in plan and "SCAN outbox" not in plan, plan


@pytest.fixture
def filled(workspace: Workspace) -> Workspace:
    with workspace.engine.begin() as connection:
        fill(connection)
    return workspace


def test_circuit_breakers_count_the_window_through_the_sent_at_index(filled: Workspace) -> None:
    with filled.engine.connect() as connection, plans(connection) as found:
        readings(connection, filled.settings, NOW)
    [plan] = outbox_plans(found, "sent_at")
    assert_uses(plan, "ix_outbox_sent_at")


def test_an_audit_of_a_period_reads_the_sent_at_index(filled: Workspace) -> None:
    period = Period(NOW - timedelta(days=2), NOW - timedelta(days=1))
    with filled.engine.connect() as connection, plans(connection) as found:
        assert len(list(sent_messages(connection, period))) > 100
    [plan] = outbox_plans(found, "sent_at")
    assert_uses(plan, "ix_outbox_sent_at")


def test_a_bounce_matched_by_recipient_finds_their_messages_by_index(filled: Workspace) -> None:
    returned = Returned("hard", recipient="c1999@example.com")
    with filled.engine.connect() as connection, plans(connection) as found:
        assert match(connection, filled.renderer.keys, returned, NOW) is not None
    [plan] = outbox_plans(found, "sent_at")
    assert "Seq Scan on outbox" not in plan and "SCAN outbox" not in plan, plan


def test_a_complaint_matched_by_message_id_finds_it_by_index(filled: Workspace) -> None:
    returned = Returned("complaint", original_message_id="m19999@acme.example")
    with filled.engine.connect() as connection, plans(connection) as found:
        assert match(connection, filled.renderer.keys, returned, NOW) is not None
    [plan] = outbox_plans(found, "message_id")
    assert_uses(plan, "ix_outbox_message_id")


def test_claims_read_due_rows_through_status_and_send_after(filled: Workspace) -> None:
    with filled.engine.begin() as connection, plans(connection) as found:
        assert len(claim(connection, "w1", NOW, timedelta(minutes=5), 100)) == 100
    for plan in outbox_plans(found, "send_after", "ORDER BY"):
        assert_uses(plan, "ix_outbox_status_send_after")


def test_requeueing_failed_messages_reads_them_by_status(filled: Workspace) -> None:
    # (status, queued_at) served this before 0023; (status, send_after) does as well. Whether
    # a run went on past a failed message is read through the contact's index.
    which = FailedMessages(since=NOW - timedelta(days=10))
    with filled.engine.begin() as connection, plans(connection) as found:
        left = passed_by(connection, which)
        assert requeue_failed(connection, which, NOW) + left > 10 and left > 0
    [plan] = outbox_plans(found, "UPDATE", "queued_at")
    assert_uses(plan, "ix_outbox_status_send_after")
    assert "ix_outbox_contact_id" in plan, plan


def test_retention_finds_old_click_targets_without_scanning_the_outbox(filled: Workspace) -> None:
    with plans(filled.engine) as found:
        run_retention(filled.engine, filled.settings, NOW + timedelta(days=330), dry_run=True)
    [plan] = outbox_plans(found, "links")
    assert "Seq Scan on outbox" not in plan and "SCAN outbox" not in plan, plan


@pytest.mark.parametrize("index", ["ix_outbox_sent_at", "ix_outbox_message_id"])
def test_queued_rows_enter_only_the_indexes_the_tick_needs(workspace: Workspace,
                                                           index: str) -> None:  # fmt: skip
    indexes = {found["name"] for found in inspect(workspace.engine).get_indexes("outbox")}
    assert "ix_outbox_status_queued_at" not in indexes
    with workspace.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            definition = connection.scalar(text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = :index "
                "AND schemaname = current_schema()"), {"index": index})  # fmt: skip
        else:
            definition = connection.scalar(text(
                "SELECT sql FROM sqlite_master WHERE name = :index"), {"index": index})  # fmt: skip
    column = index.removeprefix("ix_outbox_")
    assert f"{column} IS NOT NULL" in definition, definition
