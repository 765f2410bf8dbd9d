"""The result writer holds one connection from group commit to group commit (a checkout from
the pool would ping the server before each), and takes a new one when the server cut it off."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select, text, update

from mailer.delivery.claims import Result, claim
from mailer.delivery.worker import DeliveryReport
from mailer.delivery.writer import ResultWriter
from mailer.store.tables import outbox
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import queue_welcome

OWNER = "test-writer"


def test_results_go_through_one_held_connection_and_a_new_one_after_a_cut(
    workspace: Workspace, project: Path, database_url: str
) -> None:
    queue_welcome(workspace, project, "ada@example.com", "bob@example.com", "cy@example.com")
    with workspace.engine.begin() as connection:
        first, second, third = (
            m.id for m in claim(connection, OWNER, NOW, timedelta(minutes=5), 10)
        )
    checkouts: list[object] = []
    event.listen(workspace.engine, "checkout", lambda *args: checkouts.append(args))
    postgres = database_url.startswith("postgresql")

    async def write_all() -> None:
        writer = ResultWriter(workspace, OWNER, lambda: NOW, set(), DeliveryReport())
        await writer.write(Result(first, "sent", reply="250 ok"))
        await writer.write(Result(second, "sent", reply="250 ok"))
        assert len(checkouts) == 1  # one connection for both commits
        if postgres:  # the server cuts the writer's connection off (a restart, a failover)
            [held] = writer.connections
            backend = held.scalar(text("SELECT pg_backend_pid()"))
            with workspace.engine.connect() as other:
                other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        await writer.write(Result(third, "sent", reply="250 ok"))
        await writer.close()
        assert writer.connections == []  # given back

    asyncio.run(write_all())
    with workspace.engine.connect() as connection:
        statuses = dict(connection.execute(select(outbox.c.id, outbox.c.status)).all())
    assert statuses == {first: "sent", second: "sent", third: "sent"}
    if postgres:
        assert len(checkouts) >= 3  # the cut one, then a new one (pinged) for the third result


def test_a_result_that_comes_while_the_writer_lingers_joins_the_same_commit(
    workspace: Workspace, project: Path, database_url: str
) -> None:
    """A commit costs the server about as much as a few rows: with fewer results waiting than
    half the sessions (the test project has 4), the writer waits a moment for more. (On
    PostgreSQL the commit bypasses SQLAlchemy, store/one_trip.py: rows written by one
    transaction share its id, xmin.)"""
    assert workspace.settings.smtp.pool_size == 4
    queue_welcome(workspace, project, "ada@example.com", "bob@example.com")
    with workspace.engine.begin() as connection:
        first, second = (m.id for m in claim(connection, OWNER, NOW, timedelta(minutes=5), 10))
    commits: list[object] = []
    event.listen(workspace.engine, "commit", lambda *args: commits.append(args))

    async def two_sessions() -> None:
        writer = ResultWriter(workspace, OWNER, lambda: NOW, set(), DeliveryReport())
        one = asyncio.create_task(writer.write(Result(first, "sent", reply="250 ok")))
        for _ in range(3):  # the writer wakes up for the first result
            await asyncio.sleep(0)
        await writer.write(Result(second, "sent", reply="250 ok"))
        await one
        await writer.close()

    asyncio.run(two_sessions())
    if database_url.startswith("postgresql"):
        with workspace.engine.connect() as connection:
            writers = connection.execute(text("SELECT DISTINCT xmin::text FROM outbox")).all()
        assert len(writers) == 1
    else:
        assert len(commits) == 1


def test_a_result_is_committed_while_an_earlier_commit_still_waits_on_postgresql(
    workspace: Workspace, project: Path, database_url: str
) -> None:
    """A commit waits for the server (its WAL flush, a lock): the sessions whose results come
    meanwhile are written by a second commit, not queued behind the first."""
    if not database_url.startswith("postgresql"):
        pytest.skip(
            "SQLite has one writer at a time: its results are committed one group after another"
        )
    queue_welcome(workspace, project, "ada@example.com", "bob@example.com")
    with workspace.engine.begin() as connection:
        first, second = (m.id for m in claim(connection, OWNER, NOW, timedelta(minutes=5), 10))

    async def two_sessions() -> None:
        writer = ResultWriter(workspace, OWNER, lambda: NOW, set(), DeliveryReport())
        with workspace.engine.connect() as blocker:  # holds the first row: its commit waits
            blocker.execute(select(outbox.c.id).where(outbox.c.id == first).with_for_update())
            stuck = asyncio.create_task(writer.write(Result(first, "sent", reply="250 ok")))
            while not writer.in_flight:  # the first result's commit has started
                await asyncio.sleep(0.01)
            later = asyncio.create_task(writer.write(Result(second, "sent", reply="250 ok")))
            for _ in range(1000):  # polled, up to about 10 s on a busy machine
                if later.done():
                    break
                await asyncio.sleep(0.01)
            alone.append(later.done() and not stuck.done())
            blocker.rollback()
        await asyncio.gather(stuck, later)
        await writer.close()

    alone: list[bool] = []
    asyncio.run(two_sessions())
    assert alone == [True]
    with workspace.engine.connect() as connection:
        statuses = dict(connection.execute(select(outbox.c.id, outbox.c.status)).all())
    assert statuses == {first: "sent", second: "sent"}


def test_a_result_for_a_row_another_worker_took_over_is_not_written_and_is_logged(
    workspace: Workspace, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both commit paths (store/one_trip.py on PostgreSQL) count the rows they still held."""
    queue_welcome(workspace, project, "ada@example.com", "bob@example.com")
    with workspace.engine.begin() as connection:
        kept, lost = (m.id for m in claim(connection, OWNER, NOW, timedelta(minutes=5), 10))
        connection.execute(update(outbox).where(outbox.c.id == lost).values(lease_owner="other"))

    async def write_both() -> None:
        writer = ResultWriter(workspace, OWNER, lambda: NOW, set(), DeliveryReport())
        await asyncio.gather(writer.write(Result(kept, "sent", reply="250 ok")),
                             writer.write(Result(lost, "sent", reply="250 ok")))  # fmt: skip
        await writer.close()

    asyncio.run(write_both())
    with workspace.engine.connect() as connection:
        statuses = dict(connection.execute(select(outbox.c.id, outbox.c.status)).all())
    assert statuses == {kept: "sent", lost: "sending"}
    [warning] = [r for r in caplog.records if r.getMessage().startswith("lease lost")]
    assert getattr(warning, "rows", None) == 1
