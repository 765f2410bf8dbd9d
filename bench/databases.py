"""An empty database for a benchmark: a SQLite file, or a fresh PostgreSQL schema, removed
afterwards. PostgreSQL is MAILER_TEST_DATABASE_URL, or the local server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

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
