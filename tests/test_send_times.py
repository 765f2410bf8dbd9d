"""A broadcast's send_at must be a time: anything else fails settings, with its path, before
any command runs (today `mailer tick` would fail at the moment the broadcast is due)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.config import load_settings
from mailer.errors import SettingsError
from tests.conftest import SECRET

LAUNCH = """
[segments]
everyone = 'email contains "@"'

[campaigns.launch]
kind = "broadcast"
list = "newsletter"
segment = "everyone"
template = "welcome/2"
subject = "Our winter blend is here"
send_at = "{send_at}"
"""


def with_send_at(project: Path, send_at: str) -> Path:
    settings = project / "settings.toml"
    settings.write_text(settings.read_text() + LAUNCH.format(send_at=send_at))
    return settings


@pytest.mark.parametrize("send_at", ["tomorrow", "2026-13-01T09:00Z", "09:00 local", ""])
def test_a_send_at_that_is_not_a_time_fails_settings_with_its_path(
    project: Path, send_at: str
) -> None:
    settings = with_send_at(project, send_at)
    with pytest.raises(SettingsError) as caught:
        load_settings(settings, environ={})
    assert f"{settings}: campaigns.launch.send_at: '{send_at}' is not a time: write " \
        "2026-03-20T09:00Z" in str(caught.value)  # fmt: skip


def test_mailer_check_names_the_setting_of_a_send_at_that_is_not_a_time(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_send_at(project, "tomorrow")
    monkeypatch.chdir(project)
    result = CliRunner().invoke(cli, ["check"], env={"MAILER_SECRET_KEY": SECRET})
    assert result.exit_code == 1
    assert "campaigns.launch.send_at: 'tomorrow' is not a time" in result.stderr
