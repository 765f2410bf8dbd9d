"""A tick that writes as many rows as a big import ends, as the import does, with ANALYZE of
the tables it wrote (PostgreSQL: autovacuum may be off or late, and the next queries would be
planned for the tables as they were). A small tick does not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mailer.campaigns.engine import ANALYZED, tick
from mailer.contacts.importer import ANALYZE_FROM_ROWS
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.helpers import run_import

STATISTICS = """SELECT c.relname, c.reltuples, s.last_analyze FROM pg_class c
                JOIN pg_stat_user_tables s ON s.relid = c.oid
                WHERE c.relname IN ('enrollments', 'outbox')
                AND c.relnamespace = current_schema()::regnamespace"""


def members(workspace: Workspace, folder: Path, count: int) -> None:
    rows = "".join(f"c{n}@example.com,C{n},2026-11-01T09:00Z,2026-11-01T09:05Z\n"
                   for n in range(count))  # fmt: skip
    path = write_csv(folder / "people.csv",
                     "email,first_name,consent_at,consent_confirmed_at\n" + rows)  # fmt: skip
    run_import(workspace, path, "newsletter")


def statistics(workspace: Workspace) -> dict[str, Any]:
    with workspace.engine.connect() as connection:
        return {row.relname: row for row in connection.execute(text(STATISTICS))}


@pytest.fixture
def postgres_workspace(workspace: Workspace, database_url: str) -> Workspace:
    if not database_url.startswith("postgresql"):
        pytest.skip("ANALYZE is PostgreSQL's (SQLite's planner keeps no statistics here)")
    return workspace


def test_a_tick_that_queues_as_much_as_a_big_import_analyzes_what_it_wrote(
    postgres_workspace: Workspace, tmp_path: Path
) -> None:
    count = ANALYZE_FROM_ROWS // 2  # enrolled and queued: twice as many rows written
    members(postgres_workspace, tmp_path, count)
    report = tick(postgres_workspace.engine, postgres_workspace.settings,
                  NOW + timedelta(minutes=1))  # fmt: skip
    assert (report.enrolled, report.queued) == (count, count)
    after = statistics(postgres_workspace)
    assert set(after) == set(ANALYZED)
    for table in ANALYZED:
        assert after[table].reltuples == count, table  # the planner knows the rows now
        assert after[table].last_analyze is not None, table


def test_a_small_tick_runs_no_analyze(postgres_workspace: Workspace, tmp_path: Path) -> None:
    members(postgres_workspace, tmp_path, 3)
    report = tick(postgres_workspace.engine, postgres_workspace.settings,
                  NOW + timedelta(minutes=1))  # fmt: skip
    assert report.queued == 3
    assert [row.last_analyze for row in statistics(postgres_workspace).values()] == [None, None]
