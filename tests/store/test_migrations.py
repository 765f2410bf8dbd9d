from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import StatementError

from mailer.store.engine import (
    _alembic_config,
    create_database_engine,
    open_database,
    schema_is_current,
)
from mailer.store.tables import lists, memberships, metadata


def test_migrations_build_exactly_the_declared_tables(database_url: str) -> None:
    engine = open_database(database_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


def test_opening_again_is_a_no_op(database_url: str) -> None:
    open_database(database_url).dispose()
    engine = open_database(database_url)
    assert schema_is_current(engine)
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_naive_times_are_refused(database_url: str) -> None:
    engine = open_database(database_url)
    naive = datetime(2026, 1, 1)
    with pytest.raises((StatementError, ValueError), match="naive datetime"), engine.begin() as db:
        db.execute(lists.insert().values(id=1, name="x", title="x", double_opt_in=False))
        db.execute(memberships.insert().values(list_id=1, contact_id=1, joined_at=naive, source=""))
    engine.dispose()


def test_switching_a_new_file_to_wal_waits_for_another_writer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # SQLite's switch to WAL reads, then upgrades to a write without its busy handler: while
    # another process held the write lock, a process opening the same new file failed at once
    # with "database is locked" (three daemons started together on a new database).
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    failures: list[BaseException] = []

    def connect() -> None:
        try:
            with create_database_engine(f"sqlite:///{path}").connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except BaseException as error:  # the test reports it
            failures.append(error)

    opener = threading.Thread(target=connect)
    opener.start()
    time.sleep(0.3)  # the opener meets the held lock (polled by sleep: faketime, see Makefile)
    holder.execute("COMMIT")
    holder.close()
    opener.join()
    assert failures == []
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# Imports first, says so, then opens the database when told: both processes migrate at once.
OPEN_WHEN_TOLD = """
import sys
from mailer.store.engine import open_database
print("ready", flush=True)
sys.stdin.readline()
open_database(sys.argv[1]).dispose()
print("opened", flush=True)
"""


@pytest.mark.parametrize("revision", [None, "0004"], ids=["new", "out-of-date"])
def test_processes_opening_a_new_or_old_database_at_once_all_succeed(
    database_url: str, revision: str | None
) -> None:
    if revision is not None:
        with create_database_engine(database_url).begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
    processes = [
        subprocess.Popen([sys.executable, "-c", OPEN_WHEN_TOLD, database_url], text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]  # fmt: skip
    for process in processes:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [e for _, e in outputs]
    assert [out for out, _ in outputs] == ["opened\n"] * 3
    engine = open_database(database_url)
    assert schema_is_current(engine)
    engine.dispose()
