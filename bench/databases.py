"""What the benchmarks share: an empty database (a SQLite file, or a fresh PostgreSQL schema,
removed afterwards; PostgreSQL is MAILER_TEST_DATABASE_URL or the local server), and how each
database spells the bulk SQL that fills it."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from mailer.consent.ledger import NewEntry, append

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def database(kind: str, workdir: Path, name: str) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a fresh PostgreSQL schema (dropped)."""
    if kind == "sqlite":
        path = workdir / f"{name}-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        return
    server = os.environ.get("MAILER_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass(frozen=True)
class Flavour:
    """How one database spells a row source of i = :lo..:hi, JSON and timestamp values."""

    postgresql: bool

    def insert(self, table: str, columns: str, values: str, where: str = "TRUE") -> str:
        if self.postgresql:
            return (f"INSERT INTO {table} ({columns}) SELECT {values} "
                    "FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS n(i) "
                    f"WHERE {where}")  # fmt: skip
        return (
            "WITH RECURSIVE n(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM n WHERE i < :hi) "
            f"INSERT INTO {table} ({columns}) SELECT {values} FROM n WHERE {where}"
        )

    def json(self, expression: str) -> str:
        """SQL for JSON built as text: jsonb on PostgreSQL, the text itself on SQLite."""
        return f"CAST({expression} AS jsonb)" if self.postgresql else expression

    def stamp(self, moment: datetime) -> Any:
        """A bound value for a timestamp column: naive UTC text on SQLite (as mailer writes
        it), the aware datetime for timestamptz on PostgreSQL."""
        if self.postgresql:
            return moment
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def shifted(self, base: str, seconds: str) -> str:
        """SQL for the timestamp parameter `base` moved by the integer expression `seconds`."""
        if self.postgresql:
            return f"CAST(:{base} AS timestamptz) + ({seconds}) * INTERVAL '1 second'"
        return (f"strftime('%Y-%m-%d %H:%M:%S', :{base}, printf('%+d seconds', {seconds})) "
                "|| '.000000'")  # fmt: skip


def ledger_entry(connection: Connection, purpose: str, at: datetime) -> int:
    """One real, hash-chained ledger entry (contact 1's grant), which every consent row cites:
    appended by the ledger itself, so the head and the chain stay verifiable."""
    entry = NewEntry(subject_hash=hashlib.sha256(b"c1@example.com").hexdigest(), contact_id=1,
                     purpose=purpose, action="granted", source="import",
                     occurred_at=at)  # fmt: skip
    (entry_id,) = append(connection, [entry], at)
    return entry_id
