"""What an operator sees when the environment is wrong: one line saying what and what to do,
exit status 1, never a traceback; and a stray MAILER_* variable is only a warning."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from mailer.cli import cli
from tests.conftest import SECRET, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer, free_port


@pytest.fixture
def mailer(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`mailer(*args, **environment)`: the real CLI in the project folder."""
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL", "MAILER_DEBUG"):
        monkeypatch.delenv(variable, raising=False)

    def run(*args: str, **environment: str | None) -> Result:  # None: unset
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


def test_an_unreachable_database_is_one_line_saying_what_to_check(mailer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    closed = free_port()  # nothing listens there
    url = f"postgresql+psycopg://mailer:pw@127.0.0.1:{closed}/mailer"
    line = one_line_error(mailer("tick", MAILER_DATABASE_URL=url))
    assert line.startswith(
        f"mailer: cannot open the database postgresql+psycopg://mailer:***@127.0.0.1:{closed}/"
        "mailer: connection failed: "
    )
    assert line.endswith("; check database_url (or MAILER_DATABASE_URL) and that the database "
                         "server is running and reachable")  # fmt: skip
    (tmp_path / "a-file").write_text("")
    line = one_line_error(mailer("tick", MAILER_DATABASE_URL=f"sqlite:///{tmp_path}/a-file/x.db"))
    assert line.startswith(f"mailer: cannot create the database folder {tmp_path}/a-file: ")
    assert line.endswith("; check database_url (or MAILER_DATABASE_URL)")


def test_a_missing_dkim_key_stops_tick_in_one_line_before_anything_is_sent(  # type: ignore[no-untyped-def]
    mailer, project: Path
) -> None:
    write_csv(project / "news.csv", """
        email,first_name,consent_at,consent_confirmed_at
        ada@example.com,Ada,2026-01-01,2026-01-01
    """)  # fmt: skip
    assert mailer("import", "news.csv", "--list", "newsletter").exit_code == 0
    dkim = {"MAILER_DKIM__DOMAIN": "acme.example", "MAILER_DKIM__SELECTOR": "s1",
            "MAILER_DKIM__KEY_FILE": "keys/dkim.pem"}  # fmt: skip
    with ScriptedSmtpServer() as relay:
        result = mailer("tick", MAILER_SMTP__PORT=str(relay.port), **dkim)
    assert one_line_error(result) == (
        f"mailer: {project / 'keys/dkim.pem'}: no such DKIM private key file (dkim.key_file); "
        "run `mailer init` to create one, then publish the TXT record it prints at "
        "s1._domainkey.acme.example"
    )
    assert relay.connections == 0


def test_a_secret_key_file_that_cannot_be_read_is_one_line(mailer, project: Path) -> None:  # type: ignore[no-untyped-def]
    (project / ".mailer" / "secret.key").mkdir(parents=True)
    line = one_line_error(mailer("consent", "show", "ada@example.com", MAILER_SECRET_KEY=None))
    assert line == (
        f"mailer: settings.toml: secret_key_file: cannot read {project / '.mailer/secret.key'} "
        "(Is a directory); make it a readable text file holding the key, or set MAILER_SECRET_KEY"
    )


def mailer_process(project: Path, database_url: str, *args: str,
                   **environment: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The real `mailer` in a process of its own, in the project folder."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("MAILER_")}
    environment |= {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "mailer", *args], cwd=project,
                          env=inherited | environment, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.mark.parametrize(("command", "fix"), [
    ("serve", "choose another port with --port (or tracking.port)"),
    ("run", "set tracking.port (or MAILER_TRACKING__PORT), or run with --no-serve"),
])  # fmt: skip
def test_a_port_in_use_is_one_line_saying_what_to_do(
    project: Path, database_url: str, command: str, fix: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = mailer_process(project, database_url, command, MAILER_TRACKING__PORT=port)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"mailer: cannot listen on 127.0.0.1:{port}: the port is in use (another mailer serve "
        f"or mailer run?); stop that program or {fix}\n"
    )


@pytest.mark.parametrize("command", ["serve", "run"])
def test_an_apple_ranges_file_that_cannot_be_read_stops_the_endpoint_at_start(
    project: Path, database_url: str, command: str
) -> None:
    """Found only at the first write, it held every open and click in memory, unwritten."""
    missing = project / "egress-ip-ranges.csv"
    result = mailer_process(project, database_url, command,
                            MAILER_TRACKING__APPLE_PROXY_RANGES_FILE=str(missing))  # fmt: skip
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"mailer: [tracking] apple_proxy_ranges_file: cannot read {missing} (No such file or "
        "directory); download https://mask-api.icloud.com/egress-ip-ranges.csv there, or remove "
        "the setting to use the shipped ranges\n"
    )


def test_a_contact_whose_step_fails_is_one_line_of_tick_and_the_others_are_sent(  # type: ignore[no-untyped-def]
    mailer, project: Path, database_url: str
) -> None:
    write_csv(project / "news.csv", """
        email,first_name,consent_at,consent_confirmed_at
        ada@example.com,Ada,2026-01-01,2026-01-01
        ken@example.com,Ken,2026-01-01,2026-01-01
    """)  # fmt: skip
    imported = mailer("import", "news.csv", "--list", "newsletter", MAILER_NOW="2026-11-23T11:00Z")
    assert imported.exit_code == 0
    engine = create_engine(database_url)
    with engine.begin() as connection:  # a zone no database of zones knows, by a raw edit
        connection.execute(text("UPDATE contacts SET timezone = 'Mars/Olympus' "
                                "WHERE email = 'ken@example.com'"))  # fmt: skip
    engine.dispose()
    with ScriptedSmtpServer() as relay:
        # Quiet hours read each contact's zone when the step is due.
        environment = {"MAILER_SMTP__PORT": str(relay.port),
                       "MAILER_ENGINE__QUIET_HOURS": "21:00-08:00"}  # fmt: skip
        result = mailer("tick", "--json", "--now", "2026-11-23T12:00Z", **environment)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["errors"] == 1, (result.stdout, result.stderr)
    assert [message.recipient for message in relay.received] == ["ada@example.com"]
    assert "Traceback" not in result.stderr
    # The campaign's batch fails, then the contact alone: a line each, the error on it.
    whole, alone = result.stderr.splitlines()
    assert whole.startswith("mailer: error: campaign failed campaign=welcome: ")
    assert alone.startswith("mailer: error: due steps failed campaign=welcome failed=1 first=")
    assert "Mars/Olympus" in whole and "Mars/Olympus" in alone
