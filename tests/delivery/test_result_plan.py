"""A result is written to its outbox row found by id, whatever the statistics say: read while
every row was queued (the tick ANALYZEs after queueing), they count no row `sending`, and
PostgreSQL took the (status, send_after) index instead, reading every claimed row to write
each result."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text

from mailer.delivery.claims import Result, claim, finish
from mailer.store.tables import outbox
from mailer.workspace import Workspace
from tests.conftest import NOW

QUEUED, CLAIMED = 5000, 1200


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_result_finds_its_row_by_id_with_statistics_from_before_the_claim(
    workspace: Workspace,
) -> None:
    with workspace.engine.begin() as connection:
        connection.execute(insert(outbox), [
            {"campaign": "welcome", "step": "hello", "cycle": n, "contact_id": None,
             "status": "queued", "queued_at": NOW, "send_after": NOW}
            for n in range(QUEUED)])  # fmt: skip
        connection.execute(text("ANALYZE outbox"))
        claimed = claim(connection, "me", NOW, timedelta(minutes=5), CLAIMED)
    plans: list[str] = []
    with workspace.engine.begin() as connection:

        @event.listens_for(connection, "before_cursor_execute", retval=True)
        def explained(conn: Any, cursor: Any, statement: str, parameters: Any,
                      context: Any, executemany: bool) -> Any:  # fmt: skip
            first = parameters[0] if executemany else parameters
            cursor.execute("EXPLAIN " + statement, first)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
            return statement, parameters

        results = [Result(m.id, "sent", reply="250 ok", message_id=f"<{m.id}@x>")
                   for m in claimed[:6]]  # fmt: skip
        assert finish(connection, "me", results, NOW) == 6
    [plan] = plans
    assert "pk_outbox" in plan, plan
    assert "ix_outbox_status_send_after" not in plan, plan
