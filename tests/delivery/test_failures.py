"""One message's failure is that message's alone: whatever a template raises for one contact
fails that outbox row, with the template's file and line, and every other message goes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET, write_csv
from tests.delivery.helpers import deliver, rows
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import run_import

Opener = Callable[..., Workspace]

FOOTER = '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
PEOPLE = """
    email,first_name,orders,consent_at,consent_confirmed_at
    ada@example.com,Ada,3,2026-01-01,2026-01-02
    bob@example.com,Bob,0,2026-01-01,2026-01-02
    cy@example.com,Cy,4,2026-01-01,2026-01-02
"""


def with_first_step(project: Path, body: str) -> None:
    (project / "templates" / "welcome" / "1.html").write_text(
        "<p>Hello {{ contact.first_name }}</p>\n" + body + "\n" + FOOTER
    )


def queue_people(workspace: Workspace, project: Path) -> None:
    run_import(workspace, write_csv(project / "news.csv", PEOPLE), "newsletter")
    assert tick(workspace.engine, workspace.settings, NOW).queued == 3


@pytest.mark.parametrize("processes", ["0", "1"])
def test_a_template_that_raises_for_one_contact_fails_that_message_and_sends_the_others(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer, processes: str
) -> None:
    with_first_step(project, "<p>{{ 100 // (contact.attributes.orders | default(0) | int) }}</p>")
    workspace = open_workspace(DELIVERY__RENDER_PROCESSES=processes)
    queue_people(workspace, project)
    report = deliver(workspace)
    assert (report.sent, report.failed) == (2, 1)
    assert sorted(r.recipient for r in smtp_server.received) == ["ada@example.com",
                                                                 "cy@example.com"]  # fmt: skip
    bob = rows(workspace)["bob@example.com"]
    assert (bob["status"], bob["reason"]) == (
        "failed", "render: templates/welcome/1.html:2: ZeroDivisionError: integer division or "
        "modulo by zero",
    )  # fmt: skip


def test_a_date_filter_on_a_missing_value_fails_that_message_in_a_render_process(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    # Babel fails on an undefined value with a bare AssertionError, in the render process.
    with_first_step(project, "<p>{% if contact.attributes.orders > 3 %}"
                    "{{ contact.attributes.last_visit | date }}{% endif %}</p>")  # fmt: skip
    workspace = open_workspace(DELIVERY__RENDER_PROCESSES="1")
    queue_people(workspace, project)
    report = deliver(workspace)
    assert (report.sent, report.failed) == (2, 1)
    cy = rows(workspace)["cy@example.com"]
    assert (cy["status"], cy["reason"]) == (
        "failed", "render: templates/welcome/1.html:2: 'contact.attributes.last_visit' is "
        "undefined",
    )  # fmt: skip


def test_mailer_tick_exits_0_and_sends_everything_but_the_broken_message(
    project: Path, database_url: str, smtp_server: ScriptedSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    with_first_step(project, "<p>{{ 100 // (contact.attributes.orders | default(0) | int) }}</p>")
    write_csv(project / "news.csv", PEOPLE)
    monkeypatch.chdir(project)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
                   "MAILER_SMTP__PORT": str(smtp_server.port),
                   "MAILER_DELIVERY__RENDER_PROCESSES": "0"}  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(cli, ["import", "news.csv", "--list", "newsletter"],
                         env=environment).exit_code == 0  # fmt: skip
    ticked = runner.invoke(cli, ["tick", "--json"], env=environment)
    assert ticked.exit_code == 0, ticked.output
    counts = json.loads(ticked.stdout)
    assert (counts["sent"], counts["failed"]) == (2, 1)
    again = json.loads(runner.invoke(cli, ["tick", "--json"], env=environment).stdout)
    assert (again["sent"], again["failed"]) == (0, 0)  # the failed message is not retried
    assert len(smtp_server.received) == 2
