"""What an operator sees when the environment is wrong: one line saying what and what to do,
exit status 1, never a traceback; and a stray MAILER_* variable is only a warning."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.cli import cli
from tests.conftest import SECRET


@pytest.fixture
def mailer(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`mailer(*args, **environment)`: the real CLI in the project folder."""
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL", "MAILER_DEBUG"):
        monkeypatch.delenv(variable, raising=False)

    def run(*args: str, **environment: str) -> Result:
        base = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}
        return CliRunner().invoke(cli, list(args), env=base | environment)

    return run


def one_line_error(result: Result) -> str:
    """The error line, after checking it is the whole of stderr and the status is 1."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mailer: ")
    return lines[0]


def test_an_unrelated_mailer_variable_is_a_warning_not_a_failure(mailer) -> None:  # type: ignore[no-untyped-def]
    result = mailer("init", MAILER_OTHER_TOOL_TOKEN="abc", MAILER_SMTP_HOST="relay.example")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "mailer: warning: MAILER_OTHER_TOOL_TOKEN is not a mailer setting; ignored",
        "mailer: warning: MAILER_SMTP_HOST is not a mailer setting; ignored "
        "(did you mean MAILER_SMTP__HOST?)",
    ]


def test_tick_refuses_to_log_in_to_a_relay_in_clear_before_sending_anything(mailer) -> None:  # type: ignore[no-untyped-def]
    login = {"MAILER_SMTP__HOST": "smtp.example.net", "MAILER_SMTP__USERNAME": "acme",
             "MAILER_SMTP__PASSWORD": "hunter2"}  # fmt: skip
    line = one_line_error(mailer("tick", **login))
    assert line == (
        'mailer: settings.toml: smtp.tls: "none" would send the password of acme in clear to '
        'smtp.example.net; set tls = "starttls" (port 587) or "implicit" (port 465)'
    )
    checked = mailer("check", **login)
    assert checked.exit_code == 1 and f"error: {line.removeprefix('mailer: ')}" in checked.stderr
