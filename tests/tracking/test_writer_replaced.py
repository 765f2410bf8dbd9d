"""The process writing opens and clicks, killed (the kernel's OOM killer, say), is replaced:
the batch it held and the hits after it are written by the next one, and the endpoint goes on
recording instead of refusing every batch for good."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from mailer.delivery.rendering import _gone, _started
from mailer.store.tables import events
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.crash.conftest import wait_for
from tests.tracking.conftest import at

Serve = Callable[..., AbstractContextManager[str]]


def opens_stored(workspace: Workspace) -> int:
    with workspace.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(events)) or 0


def writer_process(app: object) -> int:
    """The writer process's id, asked of it (its pool has one process)."""
    pid: int = app.state.writer.executor.submit(os.getpid).result(timeout=20)  # type: ignore[attr-defined]
    return pid


def test_a_killed_writer_process_is_replaced_and_nothing_answered_is_lost(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    app = create_app(workspace)
    with serve(app) as base:
        assert httpx.get(at(base, urls["open"]), timeout=60).status_code == 200  # starts it
        wait_for(lambda: opens_stored(workspace) == 1, 20, "the first open")
        first = writer_process(app)
        started = _started(first)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: _gone(first, started), 20, "the writer process ends")
        for _ in range(3):  # flush_size 1: each a batch; the first meets the dead process
            # Each waits for room until its hit is written: by the new process, once started.
            assert httpx.get(at(base, urls["open"]), timeout=60).status_code == 200
        wait_for(lambda: opens_stored(workspace) == 4, 20, "the opens after the kill")
        second = writer_process(app)
        health = httpx.get(f"{base}/healthz").json()
    assert second != first
    assert health["status"] == "ok", health
