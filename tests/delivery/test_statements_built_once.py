"""The reads delivery makes for every chunk (contacts, their standing, the recheck's
enrollments) run statements built once, the chunk's ids given as a parameter: building and
keying a new statement cost the delivering process more CPU than the database spends on
answering it for 40 rows (issue 16)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from mailer.consent.standing import standings
from mailer.contacts.model import load_contacts
from mailer.delivery.claims import OutboxMessage
from mailer.delivery.still_wanted import _enrollments
from mailer.workspace import Workspace
from tests.conftest import NOW


def test_each_chunk_runs_the_statements_of_the_chunk_before(workspace: Workspace) -> None:
    chunks = [[1, 2, 3], [4, 5]]
    run: list[list[Any]] = []
    with workspace.engine.connect() as connection:

        @event.listens_for(connection, "before_execute")
        def seen(conn: Any, statement: Any, *_: Any) -> None:
            run[-1].append(statement)

        for ids in chunks:
            run.append([])
            load_contacts(connection, ids)
            standings(connection, "newsletter", ids)
            messages = [OutboxMessage(n, "welcome", "hello", n, None, 1, NOW, False) for n in ids]
            _enrollments(connection, messages)
    first, second = run
    assert len(first) == len(second) == 4
    assert all(a is b for a, b in zip(first, second, strict=True))
