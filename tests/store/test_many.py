"""store.bulk.Many, a statement compiled once and executed with a few rows at a time (delivery
writes its results through it), writes what SQLAlchemy's own executemany writes and counts the
same rows matched: its statement's literals kept, times converted as their column binds them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam, insert, select, update

from mailer.store.bulk import Many
from mailer.store.tables import outbox
from mailer.workspace import Workspace
from tests.conftest import NOW


def test_many_writes_and_counts_what_sqlalchemy_writes(workspace: Workspace) -> None:
    with workspace.engine.begin() as connection:
        connection.execute(insert(outbox), [
            {"id": n, "campaign": "welcome", "step": "hello", "cycle": n, "contact_id": None,
             "status": "sending" if n % 4 else "queued", "queued_at": NOW, "send_after": NOW}
            for n in range(1, 17)])  # fmt: skip
    statement = (
        update(outbox).where(outbox.c.id == bindparam("row_id"), outbox.c.status == "sending")
        .values(status=bindparam("status"), sent_at=bindparam("sent_at"), reply=bindparam("reply"))
    )  # fmt: skip

    def rows(ids: range) -> list[dict[str, object]]:
        return [{"row_id": n, "status": "sent", "reply": None if n % 8 == 2 else f"250 {n}",
                 "sent_at": NOW + timedelta(seconds=n, microseconds=n)}
                for n in ids]  # fmt: skip

    with workspace.engine.begin() as connection:
        theirs = connection.execute(statement, rows(range(1, 9))).rowcount
        ours = Many(connection.dialect, statement, list(rows(range(9, 17))[0])).execute(
            connection, rows(range(9, 17))
        )
        found = {row.id: (row.status, row.reply, row.sent_at)
                 for row in connection.execute(select(outbox))}  # fmt: skip
    assert theirs == ours == 6  # rows 4 and 8, 12 and 16 were not sending
    for n in range(1, 9):
        status, reply, sent_at = found[n + 8]
        shifted = (status, reply and reply.replace(str(n + 8), str(n)),
                   sent_at and sent_at - timedelta(seconds=8, microseconds=8))  # fmt: skip
        assert shifted == found[n]
