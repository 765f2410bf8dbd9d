"""After a large import on PostgreSQL the planner's statistics are refreshed (ANALYZE), so
that the consent check at send time does not plan for the list as it was before; autovacuum,
which may be off or late, is switched off here to prove it is not what did it."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Connection, text

from mailer.contacts.importer import ANALYZED
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import run_import


def people(folder: Path, first: int, last: int) -> Path:
    rows = "".join(f"p{n}@example.com,P{n},2026-11-01T09:00Z\n" for n in range(first, last))
    return write_csv(folder / f"people-{first}.csv", "email,first_name,consent_at\n" + rows)


def estimated_rows(connection: Connection, table: str) -> float:
    """What the planner believes (pg_class.reltuples): -1 before the table's first ANALYZE."""
    return float(connection.scalar(text("SELECT reltuples FROM pg_class WHERE oid = "
                                        "to_regclass(:table)"), {"table": table}))  # fmt: skip


def last_analyze(connection: Connection) -> object:
    return connection.scalar(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relid = "
                                  "to_regclass('contacts')"))  # fmt: skip


def test_a_large_import_refreshes_the_planners_statistics_and_a_small_one_does_not(
    workspace: Workspace, tmp_path: Path
) -> None:
    if workspace.engine.dialect.name != "postgresql":
        summary = run_import(workspace, people(tmp_path, 0, 20), "newsletter")
        assert (summary.imported, summary.analyzed) == (20, False)  # SQLite: see Decisions
        return
    with workspace.engine.begin() as connection:
        for table in ANALYZED:
            connection.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
    with workspace.engine.connect() as connection:
        assert estimated_rows(connection, "contacts") == -1
    summary = run_import(workspace, people(tmp_path, 0, 1000), "newsletter")
    assert (summary.imported, summary.analyzed) == (1000, True)
    with workspace.engine.connect() as connection:
        assert estimated_rows(connection, "contacts") == 1000
        assert estimated_rows(connection, "memberships") == 1000
        assert estimated_rows(connection, "consent_status") == 1000
    for _ in range(100):  # the statistics view is written as the server gets to it
        with workspace.engine.connect() as connection:
            analyzed_at = last_analyze(connection)
        if analyzed_at is not None:
            break
        time.sleep(0.05)
    assert analyzed_at is not None
    # 50 rows beside 1,000 (5%, under 10,000): the statistics still describe the table well.
    summary = run_import(workspace, people(tmp_path, 1000, 1050), "newsletter")
    assert (summary.imported, summary.analyzed) == (50, False)
    with workspace.engine.connect() as connection:
        assert estimated_rows(connection, "contacts") == 1000
        assert last_analyze(connection) == analyzed_at
