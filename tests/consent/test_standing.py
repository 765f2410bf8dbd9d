"""The standing query of both consent gates looks each contact up by index: on PostgreSQL it
never reads the whole list for a chunk of 40 (issue 16: gate 2 cost ~10 ms of server CPU a
chunk on a list of 10,000, hashing every membership and consent status)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, text

from mailer.consent.standing import standings
from mailer.workspace import Workspace
from tests.helpers import run_import

CONTACTS = 3000


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_chunk_of_standings_reads_by_index_not_the_whole_list(
    workspace: Workspace, tmp_path: Path
) -> None:
    rows = [f"reader{n}@example.com,2026-01-05T10:00:00Z,2026-01-05T10:03:00Z"
            for n in range(CONTACTS)]  # fmt: skip
    path = tmp_path / "many.csv"
    path.write_text("email,consent_at,consent_confirmed_at\n" + "\n".join(rows) + "\n")
    assert run_import(workspace, path, "newsletter").analyzed  # statistics as a big list has
    with workspace.engine.connect() as connection:
        ids = list(connection.scalars(text("SELECT id FROM contacts ORDER BY id LIMIT 40")))
        plans: list[str] = []

        @event.listens_for(connection, "before_cursor_execute", retval=True)
        def explained(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
            return statement, parameters

        found = standings(connection, "newsletter", ids)
    assert len(found) == 40 and all(s.member and s.status == "confirmed" for s in found.values())
    [plan] = plans
    assert "Seq Scan on memberships" not in plan, plan
    assert "Seq Scan on consent_status" not in plan, plan
    assert "Hash" not in plan, plan
