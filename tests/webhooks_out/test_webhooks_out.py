"""Outgoing webhooks over real HTTP: events made by the real code paths (a send into the
aiosmtpd relay, clicks through record_hits, a bounce through apply_returned) are POSTed,
signed, to a real receiver; failures retry with backoff on the moved clock."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.delivery.claims import message_key
from mailer.delivery.worker import Deliverer
from mailer.errors import SettingsError
from mailer.returns.effects import apply_returned
from mailer.returns.report import Returned
from mailer.store.tables import webhook_outbox
from mailer.tracking.hits import Hit
from mailer.tracking.recording import record_hits
from mailer.webhooks_out.queue import MAX_ATTEMPTS, retry_delay
from mailer.webhooks_out.sender import WebhookSender, deliver_once
from mailer.webhooks_out.signature import sign, verify
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET
from tests.delivery.helpers import deliver, queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.webhooks_out.conftest import HOOK_SECRET, Opener, Receiver

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")  # fmt: skip


def queue_rows(workspace: Workspace) -> list[dict[str, object]]:
    with workspace.engine.connect() as connection:
        found = connection.execute(select(webhook_outbox).order_by(webhook_outbox.c.id))
        return [dict(row._mapping) for row in found]


def post_due(workspace: Workspace) -> dict[str, int]:
    return dict(deliver_once(workspace.engine, workspace.settings, workspace.clock))


def test_a_sent_message_is_posted_signed_with_its_contact_campaign_and_message_id(
    hooked: Opener, project: Path, receiver: Receiver
) -> None:
    workspace = hooked()
    queue_welcome(workspace, project, "ada@example.com,Ada")
    assert deliver(workspace).sent == 1
    assert post_due(workspace) == {"delivered": 1}
    [call] = receiver.calls
    assert call.verified
    payload = call.payload
    outbox_row = rows(workspace)["ada@example.com"]
    assert payload["type"] == "sent" and payload["occurred_at"] == NOW.isoformat()
    assert payload["contact"] == {"email": "ada@example.com", "id": outbox_row["contact_id"]}
    assert (payload["campaign"], payload["step"]) == ("welcome", "hello")
    assert payload["message_id"] == outbox_row["message_id"]
    assert call.headers["mailer-webhook-id"] == payload["id"]
    assert call.headers["content-type"] == "application/json"
    [row] = queue_rows(workspace)
    assert row["status"] == "delivered" and row["attempts"] == 1 and row["delivered_at"] == NOW
    assert post_due(workspace) == {}  # nothing is posted twice


def test_an_event_no_subscription_wants_is_not_queued(hooked: Opener, project: Path) -> None:
    workspace = hooked(events='["clicked", "bounced"]')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    assert deliver(workspace).sent == 1
    assert queue_rows(workspace) == []


def test_a_persons_click_is_posted_with_its_url_and_a_machines_is_not(
    hooked: Opener, project: Path, receiver: Receiver, clock: FrozenClock
) -> None:
    (project / "templates" / "welcome" / "1.html").write_text(
        '<p>Hi <a href="https://acme.example/beans">beans</a></p>'
        '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    )
    workspace = hooked(events='["clicked", "opened"]')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    assert deliver(workspace).sent == 1
    outbox_row = rows(workspace)["ada@example.com"]
    links = json.loads(str(outbox_row["links"]))
    key = message_key(int(str(outbox_row["id"])))
    later = NOW + timedelta(hours=2)
    hits = [Hit("click", key, links.index("https://acme.example/beans"), later, CHROME,
                "198.51.100.7", "GET"),
            Hit("click", key, 0, later + timedelta(minutes=5), "curl/8.0", "203.0.113.9",
                "HEAD")]  # fmt: skip
    with workspace.engine.begin() as connection:
        assert record_hits(connection, workspace.settings, workspace.key, hits) == 2
    clock.advance(timedelta(hours=3))
    assert post_due(workspace) == {"delivered": 1}
    [call] = receiver.calls
    assert call.verified and call.payload["type"] == "clicked"
    assert call.payload["data"]["url"] == "https://acme.example/beans"
    assert call.payload["contact"]["email"] == "ada@example.com"


def test_a_returned_hard_bounce_and_a_complaint_are_posted(
    hooked: Opener, project: Path, receiver: Receiver
) -> None:
    workspace = hooked(events='["bounced", "complained"]')
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    assert deliver(workspace).sent == 2
    sent = rows(workspace)
    bounce = Returned("hard", "ada@example.com", "5.1.1", why="550 5.1.1 no such user")
    complaint = Returned("complaint", "bob@example.com", feedback_type="abuse")
    with workspace.engine.begin() as connection:
        apply_returned(connection, workspace, bounce, int(str(sent["ada@example.com"]["id"])),
                       {"digest": "a"}, NOW)  # fmt: skip
        apply_returned(connection, workspace, complaint, int(str(sent["bob@example.com"]["id"])),
                       {"digest": "b"}, NOW)  # fmt: skip
        # The same report again changes nothing, and says nothing again.
        apply_returned(connection, workspace, bounce, int(str(sent["ada@example.com"]["id"])),
                       {"digest": "a"}, NOW)  # fmt: skip
    assert post_due(workspace) == {"delivered": 2}
    by_type = {call.payload["type"]: call.payload for call in receiver.calls}
    assert by_type["bounced"]["contact"]["email"] == "ada@example.com"
    assert by_type["bounced"]["data"]["classification"] == "hard"
    assert by_type["bounced"]["data"]["status_code"] == "5.1.1"
    assert by_type["complained"]["contact"]["email"] == "bob@example.com"
    assert by_type["complained"]["data"]["feedback_type"] == "abuse"


def test_a_failing_endpoint_is_retried_with_backoff_then_dead_then_retried_by_hand(
    hooked: Opener, project: Path, receiver: Receiver, clock: FrozenClock
) -> None:
    workspace = hooked(events='["sent"]')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    deliver(workspace)
    receiver.status = 500
    assert post_due(workspace) == {"retry": 1}
    [row] = queue_rows(workspace)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["next_attempt_at"] == NOW + timedelta(minutes=1)
    assert str(row["last_error"]).startswith("HTTP 500")
    assert post_due(workspace) == {}  # not due yet: nothing posted
    assert len(receiver.calls) == 1
    for failed in range(1, MAX_ATTEMPTS):
        clock.advance(retry_delay(failed))
        expected = {"dead": 1} if failed + 1 == MAX_ATTEMPTS else {"retry": 1}
        assert post_due(workspace) == expected
    assert len(receiver.calls) == MAX_ATTEMPTS
    assert clock.now() - NOW < timedelta(days=3)  # the whole schedule stays under 3 days
    [row] = queue_rows(workspace)
    assert row["status"] == "dead" and row["next_attempt_at"] is None
    clock.advance(timedelta(days=30))
    assert post_due(workspace) == {}  # the dead are not tried again by themselves
    ids = {call.headers["mailer-webhook-id"] for call in receiver.calls}
    assert len(ids) == 1  # every retry is the same event: a receiver dedupes on the id

    receiver.status = 204
    result = CliRunner().invoke(cli, ["--config", str(project / "settings.toml"),
                                      "webhooks", "retry", "crm"], env=cli_env(workspace),
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0 and "1 dead event(s) of crm queued again" in result.output
    clock.advance(timedelta(minutes=1))  # the command's clock ran on from MAILER_NOW
    assert post_due(workspace) == {"delivered": 1}


def test_status_counts_per_subscription_as_json(
    hooked: Opener, project: Path, receiver: Receiver, clock: FrozenClock
) -> None:
    workspace = hooked(events='["sent"]')
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    deliver(workspace)
    receiver.status = 503
    assert post_due(workspace) == {"retry": 2}
    clock.advance(timedelta(minutes=1))
    receiver.status = 200
    with workspace.engine.begin() as connection:  # one of the two stays failing
        connection.execute(webhook_outbox.update().where(webhook_outbox.c.id == 2)
                           .values(next_attempt_at=NOW + timedelta(hours=1)))  # fmt: skip
    assert post_due(workspace) == {"delivered": 1}
    env = cli_env(workspace) | {"MAILER_NOW": (NOW + timedelta(minutes=10)).isoformat()}
    result = CliRunner().invoke(cli, ["--config", str(project / "settings.toml"), "webhooks",
                                      "status", "--json"], env=env,
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    [crm] = json.loads(result.output)
    assert crm == {"name": "crm", "url": receiver.url, "pending": 1, "delivered_24h": 1,
                   "dead": 0, "oldest_pending_seconds": 600,
                   "last_error": "HTTP 503: nope"}  # fmt: skip


def test_a_hanging_endpoint_does_not_slow_sending(
    hooked: Opener, project: Path, receiver: Receiver, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = hooked(events='["sent"]', timeout="10 min")
    queue_welcome(workspace, project, "ada@example.com,Ada")
    deliver(workspace)
    receiver.status = "hang"
    people = [f"p{n}@example.com,P{n}" for n in range(5)]

    async def scenario() -> None:
        stop = asyncio.Event()
        sender = WebhookSender(workspace.engine, workspace.settings, workspace.clock)
        posting = asyncio.create_task(sender.run(stop, 0.01))
        for _ in range(2000):  # until ada's event hangs in the receiver
            if receiver.hanging:
                break
            await asyncio.sleep(0.005)
        assert receiver.hanging == 1
        await asyncio.to_thread(queue_welcome, workspace, project, *people)
        deliverer = Deliverer(workspace)
        try:
            report = await deliverer.drain()
        finally:
            await asyncio.to_thread(deliverer.close)
        assert report.sent == len(people)
        assert receiver.hanging == 1  # still hanging: sending went on beside it
        posting.cancel()
        await sender.close()

    asyncio.run(scenario())
    assert len(smtp_server.received) == len(people) + 1
    assert len(queue_rows(workspace)) == len(people) + 1


def test_the_documented_check_refuses_a_forged_or_replayed_call() -> None:
    body = b'{"id":"e1","type":"sent"}'
    secret = HOOK_SECRET.encode()
    now = int(time.time())
    good = {"mailer-webhook-timestamp": str(now), "mailer-signature": sign(secret, now, body)}
    assert verify(secret, good, body)
    assert not verify(b"another-secret", good, body)
    assert not verify(secret, good, body.replace(b"sent", b"opened"))
    forged = good | {"mailer-signature": "v1=" + "0" * 64}
    assert not verify(secret, forged, body)
    old = now - 301
    replayed = {"mailer-webhook-timestamp": str(old), "mailer-signature": sign(secret, old, body)}
    assert not verify(secret, replayed, body)
    assert not verify(secret, {"mailer-signature": good["mailer-signature"]}, body)


def test_settings_refuse_a_written_secret_an_unknown_event_and_plain_http(
    project: Path, environ: dict[str, str]
) -> None:
    settings_file = project / "settings.toml"
    base = settings_file.read_text()
    settings_file.write_text(base + '\n[webhooks.outgoing.crm]\nurl = "http://crm.example/in"\n'
                             'events = ["sent", "delivered"]\nsecret = "abc"\n')  # fmt: skip
    with pytest.raises(SettingsError) as error:
        load_settings(settings_file, environ=environ)
    message = str(error.value)
    assert "webhooks.outgoing.crm.secret: secrets may not be written in settings; use " \
           "MAILER_WEBHOOKS__OUTGOING__CRM__SECRET or secret_file" in message  # fmt: skip
    assert "webhooks.outgoing.crm.url" in message and "https" in message
    assert "webhooks.outgoing.crm.events[1]" in message
    settings_file.write_text(base + '\n[webhooks.outgoing.crm]\nurl = "https://crm.example/in"\n'
                             'events = ["*"]\n')  # fmt: skip
    variable = {"MAILER_WEBHOOKS__OUTGOING__CRM__SECRET": "12345"}  # a number stays text
    settings = load_settings(settings_file, environ=environ | variable)
    hook = settings.webhooks.outgoing["crm"]
    assert hook.secret is not None and hook.secret.get_secret_value() == "12345"
    assert hook.wants("survey_answered") and hook.timeout == timedelta(seconds=5)


def cli_env(workspace: Workspace) -> dict[str, str]:
    return {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": workspace.settings.database_url,
            "MAILER_WEBHOOKS__OUTGOING__CRM__SECRET": HOOK_SECRET,
            "MAILER_NOW": workspace.clock.now().isoformat()}  # fmt: skip
