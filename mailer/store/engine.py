"""Opening the database: SQLite (WAL, foreign keys, one writer at a time) or PostgreSQL, upgraded
to the newest schema on open."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from mailer.errors import MailerError
from mailer.logs import logger
from mailer.store.revisions import (
    MIGRATIONS,
    SchemaState,
    newest_revision,
    refusal,
    revision_of,
)

# Seconds a SQLite connection waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT = 30
# The PostgreSQL advisory lock held while migrating ("mailer" in ASCII): one database-wide key.
MIGRATIONS_LOCK = 0x6D61696C6572
# The PostgreSQL advisory lock of the enroller, the one process a tick at a time that does the
# once-per-tick work ("enrl" in ASCII): paired with the schema's hash (store/locking.py).
ENROLLER_LOCK = 0x656E726C


def create_database_engine(url: str, **options: Any) -> Engine:
    """An engine for `url`, with SQLite configured the way mailer needs it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise MailerError(f"database_url: '{url}' is not a database URL") from None
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **options)
    if parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise MailerError(
                f"cannot create the database folder {folder}: {error.strerror}; "
                f"check database_url (or MAILER_DATABASE_URL)"
            ) from None
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: big imports stay in memory
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Take the write lock up front: a deferred transaction that reads, then writes, fails
        # with "database is locked" when another writer got in between. A connection marked
        # read_only (see `reading`) only reads a snapshot, and need not wait for writers.
        read_only = connection.get_execution_options().get("read_only")
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _switch_to_wal(cursor: Any) -> None:
    # On a new file the switch reads, then upgrades to a write without SQLite's busy handler
    # (it could deadlock there): while another process holds the write lock it fails at once
    # with "database is locked". Wait for that lock as any other write would.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def reading(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite it does not queue behind writers for the lock
    (WAL gives it a consistent snapshot)."""
    return engine.connect().execution_options(read_only=True)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def schema_is_current(engine: Engine) -> bool:
    heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current == heads


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest migration (a no-op when it is already there); the
    revisions before and after. A database at a revision this mailer does not know (a newer
    mailer upgraded it) is refused, by every command, before anything reads it."""
    try:
        with engine.connect() as connection:
            before = revision_of(connection)
        if before == (newest := newest_revision()):
            return newest, newest
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Two processes opening a new database at once would both create
                # alembic_version: the second waits here, then finds the schema current.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": MIGRATIONS_LOCK})  # fmt: skip
            before = revision_of(connection)  # another process may have upgraded it meanwhile
            if (refused := refusal(before)) is not None:
                raise MailerError(refused)
            command.upgrade(_alembic_config(connection), "head")
    except OperationalError as error:
        raise cannot_open(engine, error) from None
    return before, newest_revision()


def cannot_open(engine: Engine, error: OperationalError) -> MailerError:
    """The driver's refusal to connect, as one line that says what to check."""
    # The driver's message can run over lines (psycopg adds "Is the server running...").
    reason = " ".join(str(error.orig).split())
    where = ("the file and its folder can be written" if engine.dialect.name == "sqlite"
             else "the database server is running and reachable")  # fmt: skip
    return MailerError(
        f"cannot open the database {engine.url!r}: {reason}; check database_url (or "
        f"MAILER_DATABASE_URL) and that {where}"
    )


def schema_state(url: str) -> SchemaState:
    """Where the database at `url` stands, read without changing it (a missing SQLite file is
    not created)."""
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():
        return SchemaState(shown, None, exists=False)
    engine = create_database_engine(url)
    try:
        with engine.connect() as connection:
            revision = revision_of(connection)
    except OperationalError as error:
        raise cannot_open(engine, error) from None
    finally:
        engine.dispose()
    if (refused := refusal(revision)) is not None:
        raise MailerError(refused)
    return SchemaState(shown, revision)


def open_database(url: str, **pool: Any) -> Engine:
    """An engine on `url` whose schema is current: what every command starts with. `pool`:
    pool_size, max_overflow, pool_timeout ([database] in settings)."""
    engine = create_database_engine(url, **pool)
    before, after = upgrade(engine)
    if before is not None and before != after:  # an existing schema moved on: the log says so
        logger.info("database upgraded", extra={"from": before, "to": after})
    return engine
