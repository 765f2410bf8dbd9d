"""`mailer plan` blocks no one while it runs; `mailer tick --until` mails only a local sink."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, event

from mailer.campaigns.activity import record_activity
from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.config import load_settings
from mailer.workspace import Workspace
from tests.conftest import SECRET, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ")


@pytest.fixture
def mailer(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
                   "MAILER_DELIVERY__RENDER_PROCESSES": "0"}  # fmt: skip

    def run(*args: str, **extra: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=environment | extra,
                                  catch_exceptions=False)  # fmt: skip

    run.environment = environment  # type: ignore[attr-defined]
    return run


@pytest.fixture
def ada_joined(mailer, project: Path) -> datetime:  # type: ignore[no-untyped-def]
    """Ada joins the newsletter now (the real clock); the time to plan and tick from."""
    write_csv(project / "news.csv", """
        email,first_name,consent_at,consent_confirmed_at
        ada@example.com,Ada,2026-01-01,2026-01-01
    """)  # fmt: skip
    assert mailer("import", "news.csv", "--list", "newsletter").exit_code == 0
    return datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)


def test_plan_blocks_no_writer_while_it_runs(mailer, project: Path, ada_joined: datetime) -> None:  # type: ignore[no-untyped-def]
    inside, written, resumed = threading.Event(), threading.Event(), threading.Event()
    planning: dict[str, Result] = {}

    def pause_in_the_plan(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The plan has run every hour and counts what it queued: hold it there, its writes
        # (and any lock they took) still in its transaction, while others write.
        if threading.current_thread().name == "plan" and "AS messages" in statement:
            inside.set()
            written.wait(timeout=20)
            resumed.set()

    def run_plan() -> None:
        planning["result"] = mailer("plan", "--now", iso(ada_joined), "--horizon", "3d", "--json")

    event.listen(Engine, "before_cursor_execute", pause_in_the_plan)
    plan = threading.Thread(target=run_plan, name="plan")
    settings = load_settings(project / "settings.toml", environ=mailer.environment)
    workspace = Workspace(settings)
    try:
        plan.start()
        assert inside.wait(timeout=60)
        with workspace.engine.begin() as connection:  # as `mailer event` does
            record_activity(connection, settings, "ada@example.com", "purchased", ada_joined)
        report = tick(workspace.engine, settings, ada_joined)  # as the daemon does
        assert not resumed.is_set()  # the writes did not wait for the plan to end
    finally:
        written.set()
        plan.join()
        event.remove(Engine, "before_cursor_execute", pause_in_the_plan)
        workspace.close()
    assert (report.enrolled, report.queued) == (1, 1)
    planned = json.loads(planning["result"].stdout)
    assert [(row["step"], row["total"]) for row in planned["queued"]] == [("hello", 1), ("tips", 1)]


def test_plan_labels_days_by_date_and_first_with_minutes(mailer, ada_joined: datetime) -> None:  # type: ignore[no-untyped-def]
    start = ada_joined.replace(hour=22, minute=37) + timedelta(days=1)  # late: day 1 is short
    table = mailer("plan", "--now", iso(start), "--horizon", "3d").stdout
    first, later = start, start + timedelta(days=2)
    hello = next(line for line in table.splitlines() if "hello" in line)
    assert f"{first:%a %d %b %H:%M}" in hello and f"{first:%a %d %b}: 1" in hello
    tips = next(line for line in table.splitlines() if "tips" in line)
    assert f"{later:%a %d %b}: 1" in tips and " d0" not in table
    planned = json.loads(mailer("plan", "--now", iso(start), "--horizon", "3d", "--json").stdout)
    assert planned["queued"][0]["first"] == start.isoformat()
    assert planned["queued"][0]["by_day"] == {start.date().isoformat(): 1}


def test_plan_holds_back_nothing_for_messages_already_sent(mailer, ada_joined: datetime) -> None:  # type: ignore[no-untyped-def]
    with ScriptedSmtpServer() as relay:
        sent = mailer("tick", "--now", iso(ada_joined), "--json",
                      MAILER_SMTP__PORT=str(relay.port))  # fmt: skip
    assert json.loads(sent.stdout)["sent"] == 1
    planned = json.loads(mailer("plan", "--now", iso(ada_joined), "--horizon", "3d",
                                "--json").stdout)  # fmt: skip
    assert planned["held_back"] == []
    assert [(row["step"], row["total"]) for row in planned["queued"]] == [("tips", 1)]


def test_tick_until_refuses_a_relay_off_this_machine(mailer, ada_joined: datetime) -> None:  # type: ignore[no-untyped-def]
    until = iso(ada_joined + timedelta(days=3))
    result = mailer("tick", "--now", iso(ada_joined), "--until", until,
                    MAILER_SMTP__HOST="smtp.example.com")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "smtp.example.com" in result.stderr and "--deliver-to-relay" in result.stderr
    outbox = json.loads(mailer("outbox", "--json").stdout)
    assert outbox == []  # refused before the first tick: nothing queued either


def test_tick_until_sends_to_a_sink_on_this_machine(mailer, ada_joined: datetime) -> None:  # type: ignore[no-untyped-def]
    with ScriptedSmtpServer() as sink:
        result = mailer("tick", "--now", iso(ada_joined),
                        "--until", iso(ada_joined + timedelta(days=3)),
                        MAILER_SMTP__PORT=str(sink.port))  # fmt: skip
    assert result.exit_code == 0
    assert [message.recipient for message in sink.received] == ["ada@example.com"] * 2


def test_a_trial_may_use_a_relay_on_this_machine_or_one_named_by_the_flag() -> None:
    from mailer.config import Smtp
    from mailer.daemon import trial_refusal

    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "mail.localhost"):
        assert trial_refusal(Smtp(host=host), deliver_to_relay=False) is None
    assert trial_refusal(Smtp(host="smtp.example.com"), deliver_to_relay=True) is None
    refusal = trial_refusal(Smtp(host="10.0.0.5", port=587), deliver_to_relay=False)
    assert refusal is not None and "10.0.0.5:587" in refusal
