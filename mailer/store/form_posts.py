"""Sign-up form posts kept from the answer to the record (table `form_posts`).

The form answers before it looks the address up (tracking/forms.py: its timing must not tell
whether the address is known), and records the post after. What it answered is written down
first, in a statement that does not depend on the address, and forgotten once the record is
committed. So a serving process that dies between the answer and the record leaves the row, and
any serving process records it a minute later (`leftovers`). Recording is idempotent (a second
record of a post finds the grant it made, and writes nothing), so a process that dies between
the record and `forget` costs nothing but the work done again.

On SQLite the rows live in the side file of the shared limits (store/limits.py: mailer.db ->
mailer.limits.db), for the same reason: writing a post down must not wait behind an import,
delivery's results or the record of the post before, whose timing it would then reveal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select

from mailer.store.limits import sidecar
from mailer.store.tables import form_posts

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
    lead: dict[str, Any]  # tracking.forms.Lead's fields
    evidence: dict[str, Any]


def keep(engine: Engine, lead: dict[str, Any], evidence: dict[str, Any],
         now: datetime) -> KeptPost:  # fmt: skip
    """Write the post down, committed, before it is answered."""
    with engine_of(engine).begin() as connection:
        post_id = connection.scalar(
            insert(form_posts).values(received_at=now, email=lead["email"], lead=lead,
                                      evidence=evidence).returning(form_posts.c.id)
        )  # fmt: skip
    return KeptPost(int(post_id), now, lead, evidence)


def forget(engine: Engine, post_id: int) -> None:
    """The post is recorded (or given up on): delete its row."""
    with engine_of(engine).begin() as connection:
        connection.execute(delete(form_posts).where(form_posts.c.id == post_id))


def forget_address(engine: Engine, email: str) -> None:
    """Delete the posts of `email` not recorded yet (an erasure: they never will be)."""
    with engine_of(engine).begin() as connection:
        connection.execute(delete(form_posts).where(form_posts.c.email == email))


def leftovers(engine: Engine, now: datetime) -> list[KeptPost]:
    """The posts answered more than LEFT_AFTER ago and not recorded, oldest first."""
    with engine_of(engine).connect() as connection:
        rows = connection.execute(
            select(form_posts).where(form_posts.c.received_at < now - LEFT_AFTER)
            .order_by(form_posts.c.received_at, form_posts.c.id).limit(LEFTOVERS_AT_ONCE)
        ).all()  # fmt: skip
    return [KeptPost(row.id, row.received_at, row.lead, row.evidence) for row in rows]


def count(engine: Engine) -> int:
    """The posts kept and not recorded (what the tests look at)."""
    with engine_of(engine).connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(form_posts)) or 0)


def engine_of(engine: Engine) -> Engine:
    """Where the posts are: the database itself, or on SQLite its side file."""
    return engine if engine.dialect.name == "postgresql" else sidecar(engine)
