"""The events the tracking endpoint and the engine make, each through its real code path (real
HTTP to the tracking app, the engine and the Deliverer on the frozen clock), POSTed to the real
receiver: confirmed, unsubscribed (one-click, the page, an operator's withdrawal),
survey_answered and converted."""

from __future__ import annotations

import email
import re
import time
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.contacts.events import record_event
from mailer.delivery.claims import message_key
from mailer.render.surveys import survey_helper
from mailer.tracking.app import create_app
from mailer.webhooks_out.sender import deliver_once
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET, write_csv
from tests.delivery.helpers import deliver, queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import run_import
from tests.tracking.conftest import BASE, running
from tests.webhooks_out.conftest import HOOK_SECRET, Opener, Receiver

CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
          "Gecko) Chrome/126.0.0.0 Safari/537.36")  # fmt: skip
BROWSER = {"User-Agent": CHROME}


def posted(workspace: Workspace, receiver: Receiver) -> list[dict[str, Any]]:
    """POST what is queued; the payloads the receiver got, each checked against its signature."""
    deliver_once(workspace.engine, workspace.settings, workspace.clock)
    assert all(call.verified for call in receiver.calls)
    return [call.payload for call in receiver.calls]


def mail(server: ScriptedSmtpServer, index: int = 0) -> EmailMessage:
    for _ in range(1000):  # bounded poll: the confirmation email goes out behind the answer
        if len(server.received) > index:
            break
        time.sleep(0.005)
    parsed = email.message_from_bytes(server.received[index].data, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


def unsubscribe_url(server: ScriptedSmtpServer, base: str) -> str:
    found = re.search(r"<(http[^>]+)>", str(mail(server)["List-Unsubscribe"]))
    assert found is not None
    return found.group(1).replace(BASE, base)


def test_a_one_click_unsubscribe_is_posted_once(
    hooked: Opener, project: Path, receiver: Receiver, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = hooked(events='["unsubscribed"]')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    assert deliver(workspace).sent == 1
    one_click = {"List-Unsubscribe": "One-Click"}
    with running(create_app(workspace)) as base:
        url = unsubscribe_url(smtp_server, base)
        assert httpx.post(url, data=one_click).status_code == 200
        assert httpx.post(url, data=one_click).status_code == 200  # left already: no event
    [payload] = posted(workspace, receiver)
    assert payload["type"] == "unsubscribed"
    assert payload["data"] == {"list": "newsletter", "via": "one-click"}
    assert payload["contact"]["email"] == "ada@example.com"
    assert (payload["campaign"], payload["step"]) == ("welcome", "hello")
    assert payload["message_id"] == rows(workspace)["ada@example.com"]["message_id"]


def test_leaving_everything_on_the_preferences_page_is_posted(
    hooked: Opener, project: Path, receiver: Receiver, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = hooked(events='["unsubscribed"]')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    deliver(workspace)
    with running(create_app(workspace)) as base:
        page = unsubscribe_url(smtp_server, base).replace("/u/", "/p/")
        assert httpx.post(page, data={"action": "all"}).status_code == 200
    [payload] = posted(workspace, receiver)
    assert payload["type"] == "unsubscribed"
    assert payload["data"] == {"list": None, "via": "preferences"}  # None: every list


def test_a_confirmed_double_opt_in_is_posted_with_its_list_and_form(
    hooked: Opener, receiver: Receiver, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = hooked(events='["confirmed"]')
    form = {"email": "ada@example.com", "list": "newsletter", "consent": "yes",
            "consent_text_version": "2026-11", "form_id": "footer"}  # fmt: skip
    with running(create_app(workspace)) as base:
        assert httpx.post(f"{base}/subscribe", data=form, headers=BROWSER).status_code == 200
        text = mail(smtp_server).get_body(("html",)).get_content()  # type: ignore[union-attr]
        found = re.search(rf'href="({BASE}/confirm/[^"]+)"', text)
        assert found is not None and posted(workspace, receiver) == []  # pending: no event
        link = found.group(1).replace(BASE, base)
        assert httpx.get(link, headers=BROWSER).status_code == 200
        assert httpx.get(link, headers=BROWSER).status_code == 200  # confirmed already
    [payload] = posted(workspace, receiver)
    assert payload["type"] == "confirmed" and payload["occurred_at"] == NOW.isoformat()
    assert payload["contact"]["email"] == "ada@example.com"
    assert payload["data"] == {"list": "newsletter", "form_id": "footer",
                               "consent_text_version": "2026-11"}  # fmt: skip


def test_a_persons_survey_answer_is_posted_and_a_scanners_is_not(
    hooked: Opener, project: Path, receiver: Receiver, clock: FrozenClock
) -> None:
    workspace = hooked(events='["survey_answered"]')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    deliver(workspace)
    key = message_key(int(str(rows(workspace)["ada@example.com"]["id"])))
    clock.advance(timedelta(minutes=5))
    with running(create_app(workspace)) as base:
        urls = re.findall(r'href="([^"]+)"', str(survey_helper(workspace.renderer.keys, base,
                                                               key)("nps", "nps")))  # fmt: skip
        assert httpx.get(urls[2], headers={"User-Agent": "curl/8.0"}).status_code == 200
        clock.advance(timedelta(minutes=1))
        assert httpx.get(urls[9], headers=BROWSER).status_code == 200
        assert httpx.get(urls[9], headers=BROWSER).status_code == 200  # a double click
        clock.advance(timedelta(minutes=1))
        assert httpx.post(urls[9], data={"comment": "Great beans"}).status_code == 200
    [payload] = posted(workspace, receiver)
    assert payload["type"] == "survey_answered"
    assert payload["contact"]["email"] == "ada@example.com"
    assert (payload["campaign"], payload["step"]) == ("welcome", "hello")
    assert payload["data"] == {"question": "nps", "value": 9}


def with_goal(project: Path) -> None:
    settings_file = project / "settings.toml"
    text = settings_file.read_text()
    settings_file.write_text(text.replace("enroll_existing = true",
                                          "enroll_existing = true\ngoal = 'event \"purchased\"'",
                                          1))  # fmt: skip


def purchase(workspace: Workspace, after: timedelta) -> None:
    with workspace.engine.begin() as connection:
        record_event(connection, "ada@example.com", "purchased", NOW + after)


def test_a_goal_reached_at_the_engines_tick_is_posted_as_converted(
    hooked: Opener, project: Path, receiver: Receiver, clock: FrozenClock
) -> None:
    with_goal(project)
    workspace = hooked(events='["converted"]')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    deliver(workspace)
    purchase(workspace, timedelta(hours=5))
    later = NOW + timedelta(days=2)
    assert tick(workspace.engine, workspace.settings, later).converted == 1
    assert tick(workspace.engine, workspace.settings, later).converted == 0
    clock.advance(later - NOW)
    [payload] = posted(workspace, receiver)
    assert payload["type"] == "converted" and payload["occurred_at"] == later.isoformat()
    assert payload["campaign"] == "welcome"
    assert payload["contact"]["email"] == "ada@example.com"
    assert payload["data"] == {"goal": 'event "purchased"'}


def test_a_goal_reached_before_sending_is_posted_as_converted_once(
    hooked: Opener, project: Path, receiver: Receiver, clock: FrozenClock
) -> None:
    with_goal(project)
    workspace = hooked(events='["converted"]')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    purchase(workspace, timedelta(minutes=30))
    assert deliver(workspace, timedelta(hours=1)).sent == 0  # the recheck skips it
    assert tick(workspace.engine, workspace.settings, NOW + timedelta(hours=2)).converted == 0
    clock.advance(timedelta(hours=2))
    [payload] = posted(workspace, receiver)
    assert payload["type"] == "converted" and payload["campaign"] == "welcome"
    assert payload["occurred_at"] == (NOW + timedelta(hours=1)).isoformat()
    assert payload["data"] == {"goal": 'event "purchased"'}


def test_consent_that_lapses_is_posted_once_as_unsubscribed_via_expiry(
    hooked: Opener, project: Path, receiver: Receiver
) -> None:
    settings = project / "settings.toml"
    settings.write_text(settings.read_text().replace(
        "forms = true\n", 'forms = true\nexpires_after = "730d"\n', 1))  # fmt: skip
    workspace = hooked(events='["unsubscribed"]')
    write_csv(project / "news.csv", """
        email,consent_at,consent_confirmed_at
        ada@example.com,2024-11-01,2024-11-01
        bob@example.com,2026-01-01,2026-01-02
    """)  # ada's two years have passed at NOW, bob's have not
    run_import(workspace, project / "news.csv", "newsletter")
    assert tick(workspace.engine, workspace.settings, NOW).expired == 1
    assert tick(workspace.engine, workspace.settings, NOW + timedelta(hours=1)).expired == 0
    [payload] = posted(workspace, receiver)
    assert payload["type"] == "unsubscribed" and payload["contact"]["email"] == "ada@example.com"
    assert payload["data"] == {"list": "newsletter", "via": "expiry"}
    assert payload["campaign"] is None and payload["message_id"] is None


def test_an_operators_withdrawal_is_posted_once_and_an_erasure_is_not(
    hooked: Opener, project: Path, receiver: Receiver, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = hooked(events='["unsubscribed"]')
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    settings = str(project / "settings.toml")
    environ = {"MAILER_SMTP__PORT": str(smtp_server.port), "MAILER_SECRET_KEY": SECRET,
               "MAILER_DATABASE_URL": workspace.settings.resolved_database_url(),
               "MAILER_WEBHOOKS__OUTGOING__CRM__SECRET": HOOK_SECRET,
               "MAILER_NOW": (NOW - timedelta(minutes=1)).isoformat()}  # fmt: skip

    def mailer(*args: str) -> None:
        result = CliRunner().invoke(cli, ["--config", settings, *args], env=environ)
        assert result.exit_code == 0, result.output

    mailer("consent", "withdraw", "Ada@Example.com", "--list", "newsletter", "--reference", "T-1")
    mailer("consent", "withdraw", "ada@example.com", "--list", "newsletter", "--reference", "T-1")
    mailer("consent", "withdraw", "bob@example.com", "--reason", "asked by phone")
    mailer("consent", "erase", "bob@example.com", "--yes", "--reference", "DSR-1")
    # Several POSTs go at once: the order they arrive in is not the order queued.
    first, everything = sorted(posted(workspace, receiver), key=lambda p: p["contact"]["email"])
    assert first["type"] == everything["type"] == "unsubscribed"
    assert first["contact"]["email"] == "ada@example.com"  # as stored, not as typed
    assert first["data"] == {"list": "newsletter", "via": "operator"}
    assert everything["contact"]["email"] == "bob@example.com"
    assert everything["data"] == {"list": None, "via": "operator"}
