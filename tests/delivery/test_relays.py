"""Several relays: [smtp] first, then [smtp.fallbacks.NAME]. A primary that refuses connections
or answers 421 is skipped (mail goes through the fallback at once, counted) until its probe,
30 s later by the injected clock; a 550 for one recipient is that recipient's answer. Real
aiosmtpd relays, real SQLite and PostgreSQL, /metrics and /healthz over real HTTP; then
`mailer campaign pause --all` and `resume --all`, whose deferred messages go at once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from mailer.campaigns.engine import tick
from mailer.check import check_project
from mailer.cli import cli
from mailer.clock import NOW_VARIABLE
from mailer.config import load_settings
from mailer.delivery.relay import refuse_cleartext_password
from mailer.delivery.relay_board import RelayBoard, downs_by_name
from mailer.delivery.relays import Down, down_after, order_to_try, takes_relay_down
from mailer.delivery.replies import SmtpReply
from mailer.delivery.retry import FailedMessages, requeue_failed
from mailer.errors import MailerError, SettingsError
from mailer.metrics import REGISTRY
from mailer.store.tables import outbox
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET
from tests.delivery.helpers import deliver, queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import run_import
from tests.tracking.conftest import running

Opener = Callable[..., Workspace]
REFUSED = SmtpReply(None, "ConnectionRefusedError: [Errno 111] Connect call failed", "connect")


@pytest.fixture
def backup() -> Iterator[ScriptedSmtpServer]:
    with ScriptedSmtpServer() as server:
        yield server


def with_fallback(open_workspace: Opener, primary: ScriptedSmtpServer,
                  backup: ScriptedSmtpServer, **more: str) -> Workspace:  # fmt: skip
    """A workspace whose [smtp] is `primary` and whose [smtp.fallbacks.backup] is `backup`;
    one session, so that every attempt is counted exactly."""
    return open_workspace(SMTP__PORT=str(primary.port), SMTP__POOL_SIZE="1",
                          SMTP__FALLBACKS__BACKUP__HOST="127.0.0.1",
                          SMTP__FALLBACKS__BACKUP__PORT=str(backup.port), **more)  # fmt: skip


def downs(workspace: Workspace) -> dict[str, Down]:
    """The relays found down, as the database holds them for every process."""
    with workspace.engine.connect() as connection:
        return downs_by_name(connection, workspace.settings)


def relay_errors() -> float:
    labels = {"stage": "connect", "kind": "no_answer"}
    return REGISTRY.get_sample_value("mailer_relay_errors_total", labels) or 0.0


def operator_view(workspace: Workspace) -> tuple[dict[str, Any], dict[str, float]]:
    """/healthz and the mailer_relay_up gauges, over real HTTP."""
    with running(create_app(workspace)) as base, httpx.Client(base_url=base) as client:
        health = client.get("/healthz").json()
        exposition = client.get("/metrics").text
    gauges = {sample.labels["relay"]: sample.value
              for family in text_string_to_metric_families(exposition)
              for sample in family.samples if sample.name == "mailer_relay_up"}  # fmt: skip
    return health, gauges


# Settings


def test_fallbacks_are_written_under_smtp_and_keep_their_secrets_out_of_the_file(
    project: Path,
) -> None:
    settings_file = project / "settings.toml"
    settings_file.write_text(settings_file.read_text() + (
        '\n[smtp.fallbacks.backup]\nhost = "smtp.backup.example"\nport = 587\n'
        'tls = "starttls"\nusername = "mailer"\n'
        '\n[smtp.fallbacks.last-resort]\nhost = "10.0.0.9"\n'))  # fmt: skip
    environ = {"MAILER_SECRET_KEY": SECRET,
               "MAILER_SMTP__FALLBACKS__BACKUP__PASSWORD": "0123"}  # fmt: skip
    settings = load_settings(settings_file, environ=environ)
    assert [name for name, _relay in settings.relays()] == ["primary", "backup", "last-resort"]
    assert settings.smtp_password("backup") == "0123"  # text as given, not the number 123
    assert settings.smtp_password("last-resort") is None
    assert settings.smtp.fallbacks["backup"].port == 587

    settings_file.write_text(settings_file.read_text() + 'password = "hunter2"\n')
    with pytest.raises(SettingsError) as refused:
        load_settings(settings_file, environ=environ)
    where = "MAILER_SMTP__FALLBACKS__LAST-RESORT__PASSWORD or password_file"
    written = "smtp.fallbacks.last-resort.password: secrets may not be written in settings"
    assert f"{written}; use {where}" in str(refused.value)


def test_a_fallback_needs_a_host_and_a_name_of_its_own(project: Path) -> None:
    settings_file = project / "settings.toml"
    original = settings_file.read_text()
    settings_file.write_text(original + "\n[smtp.fallbacks.backup]\nport = 587\n")
    with pytest.raises(SettingsError, match=r"smtp\.fallbacks\.backup\.host: is required"):
        load_settings(settings_file, environ={"MAILER_SECRET_KEY": SECRET})
    settings_file.write_text(original + '\n[smtp.fallbacks.primary]\nhost = "b.example"\n')
    with pytest.raises(SettingsError, match="'primary' names \\[smtp\\] itself"):
        load_settings(settings_file, environ={"MAILER_SECRET_KEY": SECRET})


def test_a_fallback_that_would_log_in_in_clear_is_refused_by_check_and_by_delivery(
    project: Path,
) -> None:
    settings_file = project / "settings.toml"
    fallback = '\n[smtp.fallbacks.backup]\nhost = "smtp.backup.example"\nusername = "mailer"\n'
    settings_file.write_text(settings_file.read_text() + fallback)
    settings = load_settings(settings_file, environ={"MAILER_SECRET_KEY": SECRET})
    refusal = 'smtp.fallbacks.backup.tls: "none" would send the password of mailer in clear'
    problems = [problem.message for problem in check_project(settings, NOW).problems]
    assert any(refusal in problem for problem in problems)
    with pytest.raises(MailerError, match=refusal):
        refuse_cleartext_password(settings)


# Pure decisions


def test_no_answer_421_and_a_refused_login_take_a_relay_down_not_a_refused_recipient() -> None:
    assert takes_relay_down(REFUSED)
    assert takes_relay_down(SmtpReply(None, "no answer within 30 s", "data"))
    assert takes_relay_down(SmtpReply(421, "4.7.0 Too busy, closing", "rcpt"))
    assert takes_relay_down(SmtpReply(535, "5.7.8 Authentication failed", "connect"))
    assert not takes_relay_down(SmtpReply(550, "5.1.1 no such user", "rcpt"))
    assert not takes_relay_down(SmtpReply(451, "4.7.1 Greylisted", "rcpt"))
    assert not takes_relay_down(SmtpReply(250, "OK: queued", "data"))


def test_a_down_relay_is_probed_after_30_s_then_twice_as_long_each_time_up_to_5_min() -> None:
    down: Down | None = None
    waits = []
    moment = NOW
    for _ in range(6):
        down = down_after(down, REFUSED, moment)
        waits.append((down.probe_at - moment).total_seconds())
        moment = down.probe_at
    assert waits == [30, 60, 120, 240, 300, 300]
    assert down is not None and down.since == NOW and down.failures == 6


def test_the_first_relay_up_or_due_a_probe_is_used_and_when_all_are_down_the_soonest() -> None:
    names = ["primary", "backup", "third"]
    primary_down = down_after(None, REFUSED, NOW)
    assert order_to_try(names, {}, NOW) == names
    assert order_to_try(names, {"primary": primary_down}, NOW) == ["backup", "third"]
    assert order_to_try(names, {"primary": primary_down}, NOW + timedelta(seconds=30)) == names
    everything = {"primary": down_after(primary_down, REFUSED, NOW),
                  "backup": down_after(None, REFUSED, NOW), "third": primary_down}  # fmt: skip
    assert order_to_try(names, everything, NOW + timedelta(seconds=1)) == ["backup"]


# Real relays


def test_a_primary_that_refuses_connections_sends_everything_through_the_fallback_until_it_is_back(
    open_workspace: Opener, project: Path, backup: ScriptedSmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    primary = ScriptedSmtpServer()  # not started: its port refuses connections
    workspace = with_fallback(open_workspace, primary, backup)
    people = ["ada@example.com", "bob@example.com", "cy@example.com"]
    queue_welcome(workspace, project, *(f"{person},P" for person in people))
    errors = relay_errors()

    with caplog.at_level(logging.INFO, logger="mailer"):
        assert deliver(workspace).sent == 3
    assert sorted(message.recipient for message in backup.received) == people
    assert relay_errors() - errors == 1  # one refused connection, then the fallback only
    assert {(row["reply"], row["relay"]) for row in rows(workspace).values()} == {
        ("250 OK: queued", "backup")
    }
    assert "relay primary is down: SMTPConnectError" in caplog.text
    assert "probed again in 30 s" in caplog.text
    health, gauges = operator_view(workspace)
    assert gauges == {"primary": 0.0, "backup": 1.0}
    assert health["status"] == "degraded"
    [down] = [reason for reason in health["reasons"] if reason["check"] == "relay_down"]
    assert down["message"].startswith("relay primary down since ")
    assert "mail goes through backup" in down["message"]
    assert "relay_failing" not in {reason["check"] for reason in health["reasons"]}

    primary.start()  # the primary is back; the fallback stays in use until the probe
    try:
        queue_more(workspace, project, "dan@example.com")
        assert deliver(workspace, timedelta(seconds=29)).sent == 1
        assert primary.connections == 0 and len(backup.received) == 4
        assert relay_errors() == errors + 1

        queue_more(workspace, project, "eve@example.com", "fay@example.com")
        with caplog.at_level(logging.INFO, logger="mailer"):
            assert deliver(workspace, timedelta(seconds=30)).sent == 2
        assert sorted(m.recipient for m in primary.received) == ["eve@example.com",
                                                                  "fay@example.com"]  # fmt: skip
        assert len(backup.received) == 4
        assert rows(workspace)["eve@example.com"]["relay"] == "primary"
        assert "relay primary is up again" in caplog.text
        health, gauges = operator_view(workspace)
        assert gauges == {"primary": 1.0, "backup": 1.0}
        assert "relay_down" not in {reason["check"] for reason in health["reasons"]}
    finally:
        primary.stop()


def queue_more(workspace: Workspace, project: Path, *people: str) -> None:
    """Queue the welcome of more people (the earlier ones stay enrolled)."""
    queue_welcome(workspace, project, *(f"{person},P" for person in people))


def test_a_probe_that_fails_again_doubles_the_wait_and_the_mail_still_goes_out(
    open_workspace: Opener, project: Path, backup: ScriptedSmtpServer
) -> None:
    primary = ScriptedSmtpServer()
    workspace = with_fallback(open_workspace, primary, backup)
    queue_more(workspace, project, "ada@example.com")
    errors = relay_errors()
    assert deliver(workspace).sent == 1
    queue_more(workspace, project, "bob@example.com")
    assert deliver(workspace, timedelta(seconds=30)).sent == 1  # probed: still refused
    assert relay_errors() - errors == 2
    down = downs(workspace)["primary"]
    assert down.failures == 2 and down.probe_at == NOW + timedelta(seconds=90)
    assert len(backup.received) == 2


def test_a_550_for_one_recipient_on_the_primary_is_that_recipients_answer_not_a_failover(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer,
    backup: ScriptedSmtpServer,
) -> None:  # fmt: skip
    workspace = with_fallback(open_workspace, smtp_server, backup)
    smtp_server.script("bob@example.com", "550 5.1.1 no such user")
    queue_more(workspace, project, "ada@example.com", "bob@example.com")
    report = deliver(workspace)
    assert report.sent == 1 and report.failed == 1 and report.bounced == 1
    assert backup.received == [] and backup.connections == 0
    assert downs(workspace) == {}
    bob = rows(workspace)["bob@example.com"]
    assert bob["status"] == "failed" and bob["reply"] == "550 5.1.1 no such user"
    assert bob["relay"] == "primary"
    with workspace.engine.begin() as connection:  # `mailer outbox retry`: the answer goes
        assert requeue_failed(connection, FailedMessages(), NOW) == 1
    bob = rows(workspace)["bob@example.com"]
    assert (bob["status"], bob["reply"], bob["relay"]) == ("queued", None, None)


def test_a_421_from_the_primary_sends_that_message_through_the_fallback_at_once(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer,
    backup: ScriptedSmtpServer,
) -> None:  # fmt: skip
    workspace = with_fallback(open_workspace, smtp_server, backup)
    smtp_server.script("ada@example.com", "421 4.7.0 Too busy, closing")
    queue_more(workspace, project, "ada@example.com")
    assert deliver(workspace).sent == 1
    assert [m.recipient for m in backup.received] == ["ada@example.com"]
    assert smtp_server.received == []
    assert rows(workspace)["ada@example.com"]["attempts"] == 1  # one attempt, two relays


def test_with_every_relay_down_the_message_waits_for_its_retry_as_with_one_relay(
    open_workspace: Opener, project: Path
) -> None:
    primary, fallback = ScriptedSmtpServer(), ScriptedSmtpServer()  # neither started
    workspace = with_fallback(open_workspace, primary, fallback)
    queue_more(workspace, project, "ada@example.com")
    assert deliver(workspace).deferred == 1
    ada = rows(workspace)["ada@example.com"]
    assert ada["status"] == "deferred" and ada["relay"] == "backup"
    assert str(ada["reply"]).startswith("SMTPConnectError")
    assert set(downs(workspace)) == {"primary", "backup"}
    health, gauges = operator_view(workspace)
    assert gauges == {"primary": 0.0, "backup": 0.0}
    assert [reason["check"] for reason in health["reasons"]] == ["relay_down", "relay_down"]
    assert all("no relay takes mail: messages wait for their retry" in reason["message"]
               for reason in health["reasons"])  # fmt: skip


def test_mailer_outbox_names_the_relay_that_carried_each_message(
    open_workspace: Opener, project: Path, backup: ScriptedSmtpServer, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    primary = ScriptedSmtpServer()
    workspace = with_fallback(open_workspace, primary, backup)
    queue_more(workspace, project, "ada@example.com")
    assert deliver(workspace).sent == 1
    monkeypatch.chdir(project)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
                   "MAILER_SMTP__PORT": str(primary.port),
                   "MAILER_SMTP__FALLBACKS__BACKUP__HOST": "127.0.0.1",
                   "MAILER_SMTP__FALLBACKS__BACKUP__PORT": str(backup.port)}  # fmt: skip

    def mailer(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    [ada] = json.loads(mailer("outbox", "--json"))
    assert ada["relay"] == "backup" and ada["reply"] == "250 OK: queued"
    environment["COLUMNS"] = "200"  # one line a row
    table = mailer("outbox")
    assert "relay" in table and "│ backup │" in table


# Shared by every process: two workspaces (two engines, as two `mailer run`) on one database


def test_a_relay_one_process_found_down_is_skipped_by_another_without_trying_it(
    open_workspace: Opener, project: Path, backup: ScriptedSmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    primary = ScriptedSmtpServer()  # not started: its port refuses connections
    first = with_fallback(open_workspace, primary, backup)
    second = with_fallback(open_workspace, primary, backup)
    assert first.engine is not second.engine
    errors = relay_errors()
    queue_more(first, project, "ada@example.com")
    assert deliver(first).sent == 1
    assert relay_errors() - errors == 1

    queue_more(second, project, "bob@example.com")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailer"):
        assert deliver(second, timedelta(seconds=10)).sent == 1
    assert relay_errors() - errors == 1  # the second never tried the primary
    assert "relay primary is down" not in caplog.text  # nor logged it a second time
    assert [m.recipient for m in backup.received] == ["ada@example.com", "bob@example.com"]
    assert rows(second)["bob@example.com"]["relay"] == "backup"
    health, gauges = operator_view(second)  # another process's view too
    assert gauges == {"primary": 0.0, "backup": 1.0}
    assert "relay_down" in {reason["check"] for reason in health["reasons"]}


def test_a_probe_due_is_taken_by_one_process_and_when_it_succeeds_every_process_uses_the_relay(
    open_workspace: Opener, project: Path, backup: ScriptedSmtpServer
) -> None:
    primary = ScriptedSmtpServer()
    first = with_fallback(open_workspace, primary, backup)
    second = with_fallback(open_workspace, primary, backup)
    queue_more(first, project, "ada@example.com")
    assert deliver(first).sent == 1
    boards = [RelayBoard(workspace.engine, workspace.settings) for workspace in (first, second)]
    for board in boards:
        board.refresh()
        assert set(board.downs()) == {"primary"}
    due = NOW + timedelta(seconds=30)
    assert asyncio.run(boards[0].take_probe("primary", due)) is True
    assert asyncio.run(boards[1].take_probe("primary", due)) is False  # taken: not both
    assert asyncio.run(boards[0].take_probe("primary", due)) is False  # nor twice by one
    taken = downs(second)["primary"]
    assert taken.probe_at == due + timedelta(seconds=60) and taken.failures == 2
    assert boards[1].downs()["primary"] == taken

    primary.start()
    try:
        queue_more(first, project, "bob@example.com")
        assert deliver(first, timedelta(seconds=90)).sent == 1  # the probe: the primary is up
        assert downs(second) == {}
        queue_more(second, project, "cy@example.com")
        assert deliver(second, timedelta(seconds=91)).sent == 1
        assert [m.recipient for m in primary.received] == ["bob@example.com", "cy@example.com"]
        assert rows(second)["cy@example.com"]["relay"] == "primary"
    finally:
        primary.stop()


# Pause and resume, every campaign at once

SECOND_CAMPAIGN = """
[campaigns.onboarding]
kind = "sequence"
list = "newsletter"
trigger = 'joins list "newsletter"'
enroll_existing = true

[[campaigns.onboarding.steps]]
name = "start"
template = "welcome/1"
subject = "Getting started"
"""


def test_pause_all_holds_every_campaign_and_resume_all_sends_the_deferred_at_once(
    project: Path, database_url: str, smtp_server: ScriptedSmtpServer,
    open_workspace: Opener, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    settings_file = project / "settings.toml"
    settings_file.write_text(settings_file.read_text() + SECOND_CAMPAIGN)
    workspace = open_workspace()
    write_people(project)
    monkeypatch.chdir(project)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
                   "MAILER_SMTP__PORT": str(smtp_server.port),
                   NOW_VARIABLE: NOW.isoformat()}  # fmt: skip

    def mailer(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run_import(workspace, project / "news.csv", "newsletter")
    smtp_server.script("ada@example.com", *["451 4.3.0 Try again later"] * 2)
    assert tick(workspace.engine, workspace.settings, NOW).queued == 4
    report = deliver(workspace)
    assert report.sent == 2 and report.deferred == 2  # ada's welcome and onboarding wait
    deferred = [row for row in rows_all(workspace) if row["status"] == "deferred"]
    assert all(row["send_after"] > NOW + timedelta(minutes=2) for row in deferred)

    paused = mailer("campaign", "pause", "--all", "--reason", "relay migration")
    assert paused.splitlines() == ["welcome: paused (relay migration)",
                                   "onboarding: paused (relay migration)",
                                   "`mailer campaign resume --all` lets them go again"]  # fmt: skip
    assert deliver(workspace, timedelta(hours=1)).counts() == {
        "sent": 0, "deferred": 0, "failed": 0, "skipped": 0}  # fmt: skip

    environment[NOW_VARIABLE] = (NOW + timedelta(seconds=10)).isoformat()
    resumed = mailer("campaign", "resume", "--all")
    assert resumed.splitlines() == ["welcome: resumed; 1 deferred message due now",
                                    "onboarding: resumed; 1 deferred message due now"]  # fmt: skip
    # Due at the resume (MAILER_NOW starts a clock that runs on), not minutes later.
    assert deliver(workspace, timedelta(minutes=1)).sent == 2
    assert sorted(m.recipient for m in smtp_server.received).count("ada@example.com") == 2


def write_people(project: Path) -> None:
    (project / "news.csv").write_text(
        "email,first_name,consent_at,consent_confirmed_at\n"
        "ada@example.com,Ada,2026-01-01,2026-01-02\nbob@example.com,Bob,2026-01-01,2026-01-02\n"
    )


def rows_all(workspace: Workspace) -> list[dict[str, Any]]:
    with workspace.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(outbox))]


def test_pause_or_resume_needs_one_name_or_all(
    project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}
    for args in (["pause"], ["resume", "welcome", "--all"]):
        result = CliRunner().invoke(cli, ["campaign", *args], env=environment)
        assert result.exit_code == 1
        assert "name one campaign to" in result.output and "or give --all" in result.output
