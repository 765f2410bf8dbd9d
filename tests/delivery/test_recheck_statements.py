"""The recheck at sending reads a chunk's enrollments and whether each contact reached its
sequence's goal in one statement, not one each (issue 16: every statement a chunk costs the
delivering process CPU), and decides as before."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event as listen

from mailer.delivery import still_wanted
from mailer.delivery.claims import claim
from tests.conftest import NOW
from tests.delivery.test_send_recheck import Opener, event, open_shop, ticked


def test_a_chunk_of_a_sequence_with_a_goal_is_rechecked_in_one_statement(
    open_workspace: Opener, project: Path
) -> None:
    workspace = open_shop(open_workspace, project)
    for who in ("ada", "ken"):
        event(workspace, "cart_abandoned", who, timedelta(0))
    ticked(workspace, timedelta(0))
    ticked(workspace, timedelta(hours=1))  # both reminders queued
    event(workspace, "purchased", "ken", timedelta(hours=2))
    now = NOW + timedelta(hours=3)
    with workspace.engine.begin() as connection:
        batch = claim(connection, "me", now, timedelta(minutes=5), 10)
        statements: list[str] = []

        @listen.listens_for(connection, "before_cursor_execute")
        def counted(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        found = still_wanted.recheck(connection, workspace.settings, batch, now)
    assert len(batch) == 2 and len(statements) == 1
    [ken] = [m for m in batch if m.id in found.skipped]
    assert found.skipped == {ken.id: 'goal reached (event "purchased")'}
    assert list(found.converted.values()) == ['event "purchased"']
    assert not found.failed and not found.branched
