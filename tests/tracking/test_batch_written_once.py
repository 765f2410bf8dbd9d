"""A batch of opens whose COMMIT reached the database but whose answer was lost (the connection
cut at that moment) looks failed to the serving process, which sends it again: it is stored
once (store/once.py), through the real endpoint and writer process, on both engines."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta

import httpx
from sqlalchemy import Table, func, select

from mailer.store.tables import events, idempotency_keys
from mailer.tracking.app import create_app
from mailer.tracking.hits import Hit
from mailer.workspace import Workspace
from tests.crash.conftest import wait_for
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
