"""`mailer outbox retry`: failed messages go back in the queue once their cause is fixed, and
pass consent gate 2 again like every queued message."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.consent.person import withdraw
from mailer.delivery.retry import FailedMessages, passed_by, requeue_failed
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET
from tests.delivery.helpers import deliver, queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer

Opener = Callable[..., Workspace]
LATER = NOW + timedelta(hours=1)


def fail_bob_and_cy(workspace: Workspace, project: Path) -> None:
    """The welcome subject names the first name: Bob and Cy have none, so theirs fail."""
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com", "cy@example.com")
    assert deliver(workspace).failed == 2


def fix_the_first_name(project: Path) -> None:
    """Subject and body fall back to 'friend' where the first name is missing."""
    settings, body = project / "settings.toml", project / "templates" / "welcome" / "1.html"
    fallback = "{{ contact.first_name | default('friend') }}"
    for path in (settings, body):
        path.write_text(path.read_text().replace("{{ contact.first_name }}", fallback))


def requeue(workspace: Workspace, which: FailedMessages | None = None) -> int:
    with workspace.engine.begin() as connection:
        return requeue_failed(connection, which or FailedMessages(), LATER)


def test_failed_messages_retried_after_the_fix_are_sent(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    fail_bob_and_cy(open_workspace(), project)
    fix_the_first_name(project)
    workspace = open_workspace()  # settings read again, as a new `mailer tick` would
    assert requeue(workspace) == 2
    bob = rows(workspace)["bob@example.com"]
    assert (bob["status"], bob["attempts"], bob["reason"]) == (
        "queued", 0, "re-queued after: render: " + str(bob["reason"]).split("render: ", 1)[1],
    )  # fmt: skip
    report = deliver(workspace, timedelta(hours=1))
    assert (report.sent, report.failed) == (2, 0)
    assert sorted(r.recipient for r in smtp_server.received) == [
        "ada@example.com", "bob@example.com", "cy@example.com"]  # fmt: skip
    assert requeue(workspace) == 0  # sent messages are never re-queued


def test_a_retried_message_of_a_contact_who_withdrew_is_not_sent(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    fail_bob_and_cy(open_workspace(), project)
    fix_the_first_name(project)
    workspace = open_workspace()
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "bob@example.com", workspace.double_opt_in, NOW,
                 list_name="newsletter")  # fmt: skip
    assert requeue(workspace) == 2
    report = deliver(workspace, timedelta(hours=1))
    assert (report.sent, report.skipped) == (1, 1)
    bob = rows(workspace)["bob@example.com"]
    assert (bob["status"], bob["reason"]) == ("skipped", "at sending: no consent (withdrawn)")
    assert "bob@example.com" not in [r.recipient for r in smtp_server.received]


def test_a_failed_step_whose_sequence_went_on_stays_failed(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bob's and cy's hello failed; two days on, tips went to them. Sending hello now would
    put it after tips: it stays failed, and the command says so."""
    fail_bob_and_cy(open_workspace(), project)
    fix_the_first_name(project)
    workspace = open_workspace()
    tips_at = NOW + timedelta(days=2, hours=1)
    tick(workspace.engine, workspace.settings, tips_at)
    assert deliver(workspace, tips_at - NOW).sent == 3
    with workspace.engine.connect() as connection:
        assert passed_by(connection, FailedMessages()) == 2
    assert requeue(workspace) == 0
    monkeypatch.chdir(project)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}
    said = CliRunner().invoke(cli, ["outbox", "retry"], env=environment)
    assert said.stdout == ("0 failed messages re-queued\n2 left failed: a later step of their "
                           "sequence went out since, and this one would now arrive after it\n")
    assert sorted(r.recipient for r in smtp_server.received).count("bob@example.com") == 1


def test_only_the_failed_messages_the_filters_name_are_requeued(
    open_workspace: Opener, project: Path
) -> None:
    workspace = open_workspace()
    fail_bob_and_cy(workspace, project)
    assert requeue(workspace, FailedMessages(campaign="welcome", step="tips")) == 0
    assert requeue(workspace, FailedMessages(reason="5.1.1")) == 0
    assert requeue(workspace, FailedMessages(since=LATER)) == 0
    assert requeue(workspace, FailedMessages("welcome", "hello", NOW, "FIRST_NAME")) == 2
    assert {str(row["status"]) for row in rows(workspace).values()} == {"sent", "queued"}


def test_mailer_outbox_retry_prints_how_many_and_names_unknown_campaigns(
    open_workspace: Opener, project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_bob_and_cy(open_workspace(), project)
    monkeypatch.chdir(project)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}
    runner = CliRunner()
    result = runner.invoke(cli, ["outbox", "retry", "--campaign", "nope"], env=environment)
    assert result.exit_code == 1
    assert "no campaign 'nope' in settings (campaigns: welcome)" in result.stderr
    result = runner.invoke(cli, ["outbox", "retry", "--since", "2026-11-23T09:00Z", "--json"],
                           env=environment)  # fmt: skip
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"requeued": 2, "left_failed": 0}
    result = runner.invoke(cli, ["outbox", "retry"], env=environment)
    assert result.stdout == "0 failed messages re-queued\n"
    listed = json.loads(runner.invoke(cli, ["outbox", "--json"], env=environment).stdout)
    assert sorted(row["status"] for row in listed) == ["queued", "queued", "sent"]
