"""SQLite's WAL checkpoints taken out of a busy writer's commits. By default the commit that
grows the WAL past 1,000 pages copies it back into the database file and syncs it, and that
commit then takes ten times as long (the tracking writer's batches: 50-100 ms, and then up
to 1.4 s, while pixel requests waited for room). Here the writer's connections never
checkpoint; a thread of their process does, on a connection of its own, after each commit it
is told of. A PASSIVE checkpoint waits for no reader nor writer: the writer goes on appending
meanwhile, and the WAL starts over once a checkpoint has copied all of it."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from sqlalchemy import Engine, event

from mailer.logs import logger


class Checkpoints:
    """Checkpoints of `engine`'s SQLite file in a thread: call `committed` after a commit."""

    def __init__(self, engine: Engine) -> None:
        self.database = str(engine.url.database)
        self.taken = 0  # checkpoints that ran, for the tests
        self._due = threading.Event()
        event.listen(engine, "connect", _no_checkpoints)
        engine.dispose()  # a connection opened before would still checkpoint: none is kept
        threading.Thread(target=self._run, name="mailer-wal-checkpoints", daemon=True).start()

    def committed(self) -> None:
        self._due.set()

    def _run(self) -> None:
        connection = sqlite3.connect(self.database, isolation_level=None)
        while True:
            self._due.wait()
            self._due.clear()
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.taken += 1
            except Exception:  # the thread lives on: the next commit asks again
                logger.warning("SQLite WAL checkpoint failed", exc_info=True)


def _no_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def checkpoints_beside(engine: Engine) -> Checkpoints | None:
    """Checkpoints in a thread for a SQLite file's engine; None for any other database."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    return Checkpoints(engine)
