"""A render process keeps what it starts with out of the collector's full passes."""

from __future__ import annotations

import gc
from pathlib import Path

from mailer.config import load_settings
from mailer.delivery.rendering import RenderPool
from tests.conftest import SECRET


def test_a_render_process_freezes_what_it_starts_with(project: Path) -> None:
    environ = {"MAILER_SECRET_KEY": SECRET, "MAILER_DELIVERY__RENDER_PROCESSES": "1"}
    settings = load_settings(project / "settings.toml", environ=environ)
    pool = RenderPool(settings)
    try:
        frozen = pool.executor.submit(gc.get_freeze_count).result(timeout=60)
    finally:
        pool.close()
    assert frozen > 10_000  # the modules, settings and renderer of the process
