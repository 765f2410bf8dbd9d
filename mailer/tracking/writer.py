"""Writing opens and clicks in a process of its own: the serving process only answers requests,
and the database work (classifying, inserting, scoring) runs on the other core instead of
competing with the event loop for Python's one lock (bench/tracking_bench.py)."""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sqlalchemy import Connection

from mailer.config import Settings
from mailer.delivery.rendering import exit_with_parent
from mailer.logs import logger
from mailer.store.locking import retried
from mailer.store.once import Once, done_once
from mailer.store.wal import Checkpoints, checkpoints_beside
from mailer.tracking.hits import Hit
from mailer.tracking.recording import Memory, record_hits

_workspace = None  # the writer process's own, made by _start
_checkpoints: Checkpoints | None = None  # SQLite's, out of the writer's commits (store/wal.py)
_memory = Memory()  # what this writer committed that the machine rules ask again (recording)


def _start(settings: Settings, serving_pid: int) -> None:
    global _workspace, _checkpoints
    from mailer.workspace import Workspace

    _workspace = Workspace(settings)
    _checkpoints = checkpoints_beside(_workspace.engine)
    exit_with_parent(serving_pid)
    gc.freeze()  # start-up's objects stay: the collector's full passes skip them


def _write(rows: Sequence[tuple[Any, ...]], batch: str) -> int:
    """Write batch `batch` once (store/once.py): sent again after its commit's answer was
    lost, it is found written and not stored twice."""
    assert _workspace is not None, "_write runs in the process HitWriter starts"
    hits = [Hit._make(row) for row in rows]
    settings, key, clock = _workspace.settings, _workspace.key, _workspace.clock
    once = Once(f"hits:{batch}")

    def write(connection: Connection) -> int:
        def work() -> dict[str, Any]:
            return {"written": record_hits(connection, settings, key, hits, _memory)}

        answer, replayed = done_once(connection, once, work, clock.now())
        if replayed:
            _memory.staged = {}  # this try wrote nothing
        return int(answer["written"])

    # A deadlock's victim (another instance scoring the same contacts) is run again.
    try:
        written = retried(_workspace.engine, write, "opens and clicks",
                          len({h.message_key for h in hits}))  # fmt: skip
    except BaseException:
        _memory.drop()
        raise
    _memory.keep()  # committed
    if _checkpoints is not None:
        _checkpoints.committed()
    return written


class HitWriter:
    """One writer process, started with the first batch; `submit` hands it a batch, whose
    future says how many were written. A writer process that died (killed by the kernel's
    OOM killer, say) is replaced at the next batch: its batch failed, and the buffer keeps it
    for that next try (a pool once broken would refuse every batch after it, for good)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.executor: ProcessPoolExecutor | None = None

    def submit(self, hits: Sequence[Hit], batch: str) -> Future[int]:
        """Write `hits` as batch `batch` (the same name when sent again: `_write`)."""
        # As plain tuples: a NamedTuple pickles through a Python call per hit, twice the cost.
        rows = [tuple(hit) for hit in hits]
        if self.executor is not None:
            try:
                return self.executor.submit(_write, rows, batch)
            except BrokenProcessPool:
                logger.error("the process writing opens and clicks died; starting another")
                self.executor.shutdown(wait=False)
        # forkserver: a clean child, not a fork of a process serving requests.
        self.executor = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("forkserver"),
            initializer=_start, initargs=(self.settings, os.getpid()),
        )  # fmt: skip
        return self.executor.submit(_write, rows, batch)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
