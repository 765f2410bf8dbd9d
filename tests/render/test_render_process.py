"""A render process keeps what it starts with out of the collector's full passes, and finds
each step of settings once."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from mailer.clock import FrozenClock
from mailer.config import SettingsError, load_settings
from mailer.delivery.rendering import RenderPool
from mailer.render.message import MessageRenderer
from tests.conftest import NOW, SECRET


def test_a_render_process_freezes_what_it_starts_with(project: Path) -> None:
    environ = {"MAILER_SECRET_KEY": SECRET, "MAILER_DELIVERY__RENDER_PROCESSES": "1"}
    settings = load_settings(project / "settings.toml", environ=environ)
    pool = RenderPool(settings)
    try:
        frozen = pool.executor.submit(gc.get_freeze_count).result(timeout=60)
    finally:
        pool.close()
    assert frozen > 10_000  # the modules, settings and renderer of the process


BROADCAST = """
[campaigns.spring]
kind = "broadcast"
list = "newsletter"
segment = "loyal"
template = "welcome/2"
subject = "Spring"
send_at = "2027-03-20T09:00"
resend = { after = "3 days", subject = "Spring, again" }

[segments]
loyal = "orders >= 3"
"""


def test_a_renderer_finds_each_step_once_and_as_settings_say(project: Path) -> None:
    settings_file = project / "settings.toml"
    settings_file.write_text(settings_file.read_text() + BROADCAST)
    settings = load_settings(settings_file, environ={"MAILER_SECRET_KEY": SECRET})
    renderer = MessageRenderer(settings, settings.secret(), FrozenClock(NOW))
    for campaign, name in [("spring", "broadcast"), ("spring", "broadcast.resend"),
                           ("welcome", "tips")]:  # fmt: skip
        found = renderer.step(campaign, name)
        assert found == settings.campaigns[campaign].step(name)
        assert renderer.step(campaign, name) is found
    with pytest.raises(SettingsError, match="no step 'gone'"):
        renderer.step("welcome", "gone")
    with pytest.raises(KeyError):
        renderer.step("gone", "tips")
