"""Which migration a database is at, against the newest this mailer knows: what `mailer db`
reports, and why a database that a newer mailer has upgraded is refused."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

MIGRATIONS = Path(__file__).parent / "migrations"


@cache
def known_revisions() -> tuple[str, ...]:
    """Every migration this mailer ships, oldest first (the chain is linear)."""
    script = ScriptDirectory(str(MIGRATIONS))
    return tuple(reversed([each.revision for each in script.walk_revisions()]))


def newest_revision() -> str:
    return known_revisions()[-1]


def revision_of(connection: Connection) -> str | None:
    """The database's migration; None when it has no schema yet."""
    return MigrationContext.configure(connection).get_current_revision()


def refusal(revision: str | None) -> str | None:
    """Why this mailer must not touch a database at `revision`, or None. A revision it does not
    know was written by a newer mailer (or another branch): its code would misread the schema,
    and a downgrade is not ours to guess."""
    if revision is None or revision in known_revisions():
        return None
    newest = newest_revision()
    if revision.isdigit() and newest.isdigit() and int(revision) > int(newest):
        return (f"the database is at revision {revision}, newer than this mailer ({newest}): "
                "upgrade mailer to the version that upgraded it (or restore a backup from "
                "before)")  # fmt: skip
    return (f"the database is at revision {revision}, which this mailer does not know (its "
            f"newest is {newest}): run the mailer that upgraded it")  # fmt: skip


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands: what `mailer db current` prints."""

    database: str  # the URL, password hidden
    revision: str | None  # None: no schema yet (or no SQLite file)
    exists: bool = True  # False: a SQLite file not created yet

    @property
    def newest(self) -> str:
        return newest_revision()

    @property
    def upgrade_pending(self) -> bool:
        return self.revision != self.newest

    def as_dict(self) -> dict[str, str | bool | None]:
        return {"database": self.database, "revision": self.revision, "newest": self.newest,
                "upgrade_pending": self.upgrade_pending}  # fmt: skip
