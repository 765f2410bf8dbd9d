"""`[database]` sizes each process's connection pool: what the operator's guide (Sizing) tells
an operator to set from the number of processes and PostgreSQL's max_connections."""

from __future__ import annotations

from pathlib import Path

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.workspace import Workspace


def test_the_pool_takes_its_size_overflow_and_timeout_from_settings(
    project: Path, environ: dict[str, str], clock: FrozenClock
) -> None:
    sized = {"MAILER_DATABASE__POOL_SIZE": "2", "MAILER_DATABASE__MAX_OVERFLOW": "1",
             "MAILER_DATABASE__POOL_TIMEOUT": "7s"}  # fmt: skip
    workspace = Workspace(load_settings(project / "settings.toml", environ={**environ, **sized}),
                          clock)  # fmt: skip
    try:
        pool = workspace.engine.pool
        held = [workspace.engine.connect() for _ in range(3)]  # two kept, one at peak
        assert (pool.size(), pool.checkedout(), pool.overflow(), pool.timeout()) == (2, 3, 1, 7)
        for connection in held:
            connection.close()
    finally:
        workspace.close()


def test_the_default_pool_is_sqlalchemys_five_and_ten(
    project: Path, environ: dict[str, str], clock: FrozenClock
) -> None:
    workspace = Workspace(load_settings(project / "settings.toml", environ=environ), clock)
    try:
        pool = workspace.engine.pool
        assert (pool.size(), pool.timeout()) == (5, 30)
    finally:
        workspace.close()
