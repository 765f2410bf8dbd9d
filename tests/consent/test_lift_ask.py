"""`mailer consent lift EMAIL --ask LIST`: the operator lifts a suppression at the person's
request and emails them the list's confirmation link; their click re-subscribes them. Through
the CLI, a real SMTP server (aiosmtpd) and the real tracking app over HTTP, on both engines."""

from __future__ import annotations

import email
import json
import shutil
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.conftest import running
from tests.tracking.test_forms import confirm_url

REPOSITORY = Path(__file__).resolve().parents[2]
Mailer = Callable[..., Result]


@pytest.fixture
def mailer(project: Path, environ: dict[str, str], smtp_server: ScriptedSmtpServer,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailer]:  # fmt: skip
    for name in ("confirm.html", "confirm.txt"):
        shutil.copy(REPOSITORY / "templates" / name, project / "templates" / name)
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    variables = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
                 "MAILER_NOW": NOW.isoformat()}  # fmt: skip

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=variables, catch_exceptions=False)

    write_csv(project / "news.csv", "email,consent_at,consent_confirmed_at\n"
              "ada@example.com,2026-03-01,2026-03-02\n")  # fmt: skip
    assert run("import", "news.csv", "--list", "newsletter").exit_code == 0
    assert run("consent", "withdraw", "ada@example.com", "--reason", "bounced").exit_code == 0
    yield run


def lists_of(mailer: Mailer) -> dict[str, str]:
    shown = json.loads(mailer("consent", "show", "ada@example.com", "--json").stdout)
    assert shown is not None
    return {row["list"]: row["status"] for row in shown["lists"]}


def suppressed(mailer: Mailer) -> bool:
    return json.loads(mailer("consent", "show", "ada@example.com", "--json").stdout)[
        "suppressed"] is not None  # fmt: skip


def test_lift_ask_emails_the_link_whose_click_re_subscribes_the_person(
    mailer: Mailer, project: Path, environ: dict[str, str], smtp_server: ScriptedSmtpServer
) -> None:
    lifted = mailer("consent", "lift", "ada@example.com", "--reason", "asked by phone",
                    "--ask", "newsletter")  # fmt: skip
    assert lifted.exit_code == 0, lifted.output
    assert "confirmation email for list newsletter sent to ada@example.com" in lifted.output
    assert not suppressed(mailer) and lists_of(mailer)["newsletter"] == "withdrawn"
    [received] = smtp_server.received
    assert received.recipient == "ada@example.com"
    message = email.message_from_bytes(received.data, policy=default_policy)
    assert isinstance(message, EmailMessage)
    settings = load_settings(project / "settings.toml", environ=environ)
    workspace = Workspace(settings, FrozenClock(NOW))
    try:
        with running(create_app(workspace)) as base:
            assert httpx.get(confirm_url(message, base)).status_code == 200
    finally:
        workspace.close()
    assert lists_of(mailer)["newsletter"] == "confirmed"
    history = json.loads(mailer("consent", "history", "ada@example.com", "--json").stdout)
    assert [e["action"] for e in history][-2:] == ["granted", "confirmed"]
    assert mailer("consent", "verify").exit_code == 0


def test_lift_ask_for_a_list_with_nothing_to_confirm_keeps_the_suppression(
    mailer: Mailer, smtp_server: ScriptedSmtpServer
) -> None:
    refused = mailer("consent", "lift", "ada@example.com", "--reason", "asked",
                     "--ask", "leads")  # fmt: skip
    assert refused.exit_code == 1
    assert "ada@example.com has no consent on list leads: --ask is for a list they" in " ".join(
        refused.output.split())  # fmt: skip
    assert suppressed(mailer) and smtp_server.received == []  # nothing lifted, nothing sent
    unknown = mailer("consent", "lift", "ada@example.com", "--reason", "asked", "--ask", "news")
    assert unknown.exit_code == 2 and "--ask news: no such list in settings" in unknown.output


def test_lift_ask_says_so_when_the_relay_refuses_and_the_lift_stands(
    mailer: Mailer, smtp_server: ScriptedSmtpServer
) -> None:
    smtp_server.script("ada@example.com", "550 5.1.1 No such user")
    lifted = mailer("consent", "lift", "ada@example.com", "--reason", "asked",
                    "--ask", "newsletter", "--json")  # fmt: skip
    assert lifted.exit_code == 0
    assert json.loads(lifted.stdout)["confirmation_sent"] is False
    assert not suppressed(mailer)
