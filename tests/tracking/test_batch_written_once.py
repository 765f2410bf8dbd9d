"""A batch of opens whose COMMIT reached the database but whose answer was lost (the connection
cut at that moment) looks failed to the serving process, which sends it again: it is stored
once (store/once.py), through the real endpoint and writer process: on both engines with the
answer replaced by an error, and on PostgreSQL with the connection really cut on the wire."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.engine import make_url

from mailer.store.tables import events, idempotency_keys
from mailer.tracking.app import create_app
from mailer.tracking.hits import Hit
from mailer.workspace import Workspace
from tests.crash.conftest import wait_for
from tests.tcp_hop import LOOPBACK, TcpHop
from tests.tracking.conftest import at

Serve = Callable[..., AbstractContextManager[str]]


def count(workspace: Workspace, table: Table) -> int:
    with workspace.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(table)) or 0


def test_a_batch_committed_whose_answer_was_lost_is_stored_once(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    app = create_app(workspace)
    buffer = app.state.buffer
    write, names = buffer.write, []

    async def answer_lost(hits: Sequence[Hit], batch: str) -> int:
        written = await write(hits, batch)  # committed by the writer process
        names.append(batch)
        if len(names) == 1:
            raise OSError("server closed the connection unexpectedly")  # ... its answer lost
        return written

    buffer.write = answer_lost
    with serve(app) as base:  # flush_size 1: the open is a batch of its own
        assert httpx.get(at(base, urls["open"]), timeout=60).status_code == 200
        wait_for(lambda: len(names) == 2, 20, "the batch sent again")
        assert httpx.get(at(base, urls["open"]), timeout=60).status_code == 200  # a new batch
        wait_for(lambda: len(names) == 3, 20, "the next batch")
    assert names[0] == names[1] != names[2]
    assert count(workspace, events) == 2  # not 3: the batch sent again was not written again
    assert buffer.recorded == 2 and count(workspace, idempotency_keys) == 2


class CutAfterCommit(TcpHop):
    """Once `armed`: on the connection that wrote a batch's name (`hits:...`), lets its COMMIT
    through and cuts the connection when the server answers it. The commit is made; the
    writer process never hears so."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.armed = False
        self.cuts = 0
        self._writing: set[socket.socket] = set()  # connections inside a batch's transaction
        self._committing: set[socket.socket] = set()

    def passing(self, data: bytes, from_client: bool) -> None:
        if not self.armed:
            return
        connection = self.connection()
        if from_client and b"hits:" in data:
            self._writing.add(connection)
        elif from_client and connection in self._writing and b"COMMIT" in data:
            self._committing.add(connection)
        elif not from_client and connection in self._committing:
            self.armed, self.cuts = False, self.cuts + 1
            self.cut()


def test_a_batch_whose_commit_answer_is_cut_on_the_wire_is_stored_once(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no connection to cut: the test above replaces the answer")
    url = make_url(workspace.settings.database_url)
    hop = CutAfterCommit(url.host or LOOPBACK, url.port or 5432)
    through = url.set(host=LOOPBACK, port=hop.port).render_as_string(hide_password=False)
    settings = workspace.settings.model_copy(update={"database_url": through})
    app = create_app(Workspace(settings, workspace.clock))  # its writer process goes through
    buffer = app.state.buffer
    clock = workspace.clock
    try:
        with serve(app) as base:  # flush_size 1: each open is a batch of its own
            clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
            hop.armed = True
            assert httpx.get(at(base, urls["open"]), timeout=60).status_code == 200
            wait_for(lambda: hop.cuts == 1, 30, "the COMMIT's answer cut")
            wait_for(lambda: buffer.recorded == 1, 30, "the batch sent again")
            clock.advance(timedelta(minutes=2))  # type: ignore[attr-defined]  # a reopen
            assert httpx.get(at(base, urls["open"]), timeout=60).status_code == 200
            wait_for(lambda: buffer.recorded == 2, 30, "the next batch")
    finally:
        hop.close()
    assert buffer.failed_writes == 1  # the cut batch failed once, then was found written
    assert count(workspace, events) == 2  # not 3
    assert count(workspace, idempotency_keys) == 2
