"""store.wal: a SQLite engine's commits never checkpoint the WAL themselves (it grows past
SQLite's 1,000 pages, the database file untouched); told of a commit, a thread of the process
copies the WAL into the database file, and a later write starts the WAL over."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import text

from mailer.store.engine import create_database_engine
from mailer.store.wal import checkpoints_beside

PAGE = 4096
ROWS, ROW_BYTES = 15, 100 * PAGE  # 15 commits of ~100 pages: 1,500 pages in all


def test_commits_leave_the_checkpoint_to_the_thread(tmp_path: Path) -> None:
    database = tmp_path / "mailer.db"
    engine = create_database_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    checkpoints = checkpoints_beside(engine)
    assert checkpoints is not None
    small = os.path.getsize(database)
    for _ in range(ROWS):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO blobs (body) VALUES (randomblob(:n))"),
                               {"n": ROW_BYTES})  # fmt: skip
    # SQLite's own checkpoint would have copied the WAL into the file at 1,000 pages.
    assert os.path.getsize(f"{database}-wal") > 1_300 * PAGE
    assert os.path.getsize(database) == small
    checkpoints.committed()
    deadline = time.monotonic() + 10
    while checkpoints.taken == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpoints.taken == 1
    assert os.path.getsize(database) > ROWS * ROW_BYTES
    wal = os.path.getsize(f"{database}-wal")
    with engine.begin() as connection:  # all of the WAL was copied: it starts over
        connection.execute(text("INSERT INTO blobs (body) VALUES (randomblob(:n))"),
                           {"n": ROW_BYTES})  # fmt: skip
        assert connection.scalar(text("SELECT count(*) FROM blobs")) == ROWS + 1
    assert os.path.getsize(f"{database}-wal") == wal
    engine.dispose()


def test_no_thread_for_postgresql_nor_memory() -> None:
    assert checkpoints_beside(create_database_engine("sqlite://")) is None
    engine = create_database_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert checkpoints_beside(engine) is None
