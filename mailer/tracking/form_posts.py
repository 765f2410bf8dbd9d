"""Sign-up form posts kept from the answer to the record (table `form_posts`).

The form answers before it looks the address up (forms.py: its timing must not tell whether
the address is known), and records the post after. What it answered is written down first, in
a statement that does not depend on the address: the record then deletes that row in its own
transaction. So a serving process that dies between the answer and the record leaves the row,
and any serving process records it a minute later (`leftovers`); two that try at once cannot
both record it, since only one deletes the row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from mailer.store.tables import form_posts
from mailer.workspace import Workspace

# A post not recorded this long after its answer was left by a process that died (the live
# record takes milliseconds, or a few seconds while the database is busy).
LEFT_AFTER = timedelta(minutes=1)
# A left post that fails to record for this long is dropped, with its error in the log: a row
# that cannot be recorded must not be tried every minute for ever.
GIVE_UP_AFTER = timedelta(days=1)
LEFTOVERS_AT_ONCE = 100


@dataclass(frozen=True)
class KeptPost:
    id: int
    received_at: datetime
    lead: dict[str, Any]  # forms.Lead's fields
    evidence: dict[str, Any]


def keep(workspace: Workspace, lead: Any, evidence: dict[str, Any], now: datetime) -> KeptPost:
    """Write the post down, committed, before it is answered. `lead` is a forms.Lead."""
    fields = asdict(lead)
    with workspace.engine.begin() as connection:
        post_id = connection.scalar(
            insert(form_posts).values(received_at=now, email=lead.email, lead=fields,
                                      evidence=evidence).returning(form_posts.c.id)
        )  # fmt: skip
    return KeptPost(int(post_id), now, fields, evidence)


def take(connection: Connection, post_id: int) -> bool:
    """Claim the post for the caller's transaction, which records it: False when another
    process recorded it already (or is recording it: the delete then waits for its end)."""
    return connection.execute(delete(form_posts).where(form_posts.c.id == post_id)).rowcount == 1


def leftovers(workspace: Workspace, now: datetime) -> list[KeptPost]:
    """The posts answered more than LEFT_AFTER ago and not recorded, oldest first."""
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(form_posts).where(form_posts.c.received_at < now - LEFT_AFTER)
            .order_by(form_posts.c.received_at, form_posts.c.id).limit(LEFTOVERS_AT_ONCE)
        ).all()  # fmt: skip
    return [KeptPost(row.id, row.received_at, row.lead, row.evidence) for row in rows]


def drop(workspace: Workspace, post_id: int) -> None:
    with workspace.engine.begin() as connection:
        connection.execute(delete(form_posts).where(form_posts.c.id == post_id))
