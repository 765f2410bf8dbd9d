"""Replies from people ([sender] reply_tracking): campaign mail's Reply-To is reply+TOKEN@, and
`mailer inbound` records a `replied` event and forwards the reply unchanged to [inbound]
replies_to through the relay (a real aiosmtpd server); out-of-office mail is no reply; an
exit_on_reply sequence stops, at the engine's tick and at sending. SQLite and PostgreSQL."""

from __future__ import annotations

import email
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.model import Contact
from mailer.delivery.claims import message_key
from mailer.errors import SettingsError
from mailer.returns import inbound
from mailer.returns.inbound import Listening, start_inbound
from mailer.store.tables import enrollments, events, outbox
from mailer.tokens import verify
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import deliver as send_due
from tests.delivery.smtp_server import LOOPBACK, ScriptedSmtpServer, free_port
from tests.returns.test_effects import sent, standing
from tests.returns.test_inbound import deliver, fixture, on_the_wire, spool

INBOX = "hello@acme.example"
TRACKING = {"SENDER__REPLY_TRACKING": "true", "INBOUND__REPLIES_TO": INBOX}
# A person's answer, as their provider signed it: forwarded byte for byte, a line that SMTP
# dot-stuffs included.
REPLY = b"""\
DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; h=from:subject; bh=x; b=y
From: Ada Lovelace <ada@example.com>
To: Acme Coffee <REPLY_TO>
Subject: Re: Welcome, Ada
Message-ID: <answer.1@example.com>
In-Reply-To: <m1.abc@acme.example>

Hello! Do you ship to Bath?
.this line starts with a dot
-- Ada
"""
OUT_OF_OFFICE = b"""\
From: Ada Lovelace <ada@example.com>
To: REPLY_TO
Subject: Automatic reply: Welcome, Ada
Auto-Submitted: auto-replied

I am away until Monday.
"""


def opened(project: Path, environ: dict[str, str], clock: FrozenClock,
           overrides: dict[str, str]) -> Workspace:  # fmt: skip
    variables = {f"MAILER_{key}": value for key, value in overrides.items()}
    return Workspace(load_settings(project / "settings.toml", environ=environ | variables), clock)


@pytest.fixture
def workspace(project: Path, environ: dict[str, str], clock: FrozenClock,
              smtp_server: ScriptedSmtpServer) -> Iterator[Workspace]:  # fmt: skip
    """Replies tracked, forwarded through the scripted relay; welcome ends on a reply."""
    settings = project / "settings.toml"
    text = settings.read_text().replace("enroll_existing = true", "enroll_existing = true\n"
                                        "exit_on_reply = true", 1)  # fmt: skip
    settings.write_text(text)
    workspace = opened(project, environ, clock, TRACKING | {
        "SMTP__PORT": str(smtp_server.port), "DELIVERY__RENDER_PROCESSES": "0"})  # fmt: skip
    yield workspace
    workspace.close()


@pytest.fixture
def listener(workspace: Workspace) -> Iterator[Listening]:
    listening = start_inbound(workspace, LOOPBACK, free_port())
    yield listening
    listening.stop()


def reply_to(workspace: Workspace, outbox_id: int) -> str:
    """The Reply-To of that message (welcome's hello) as the renderer writes it."""
    hello = workspace.settings.campaigns["welcome"].steps[0]
    rendered = workspace.renderer.render("welcome", hello, Contact("ada@example.com", "Ada"),
                                         message_key(outbox_id))  # fmt: skip
    return str(email.message_from_bytes(rendered.data)["Reply-To"]).strip("<>")


def replied_events(workspace: Workspace) -> list[dict[str, object]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(events).where(events.c.name == "replied"))
        return [dict(row.properties) | {"at": row.occurred_at} for row in rows]


def test_a_reply_is_recorded_and_forwarded_unchanged_once(
    workspace: Workspace, project: Path, listener: Listening, smtp_server: ScriptedSmtpServer
) -> None:
    ada = sent(workspace, project, "newsletter", ["ada@example.com"])["ada@example.com"]
    address = reply_to(workspace, ada)
    mail = REPLY.replace(b"REPLY_TO", address.encode())
    assert deliver(listener, address, mail, sender="ada@example.com").startswith("250")
    listener.handler.settle()

    assert replied_events(workspace) == [
        {"campaign": "welcome", "step": "hello", "outbox_id": ada, "at": NOW}]  # fmt: skip
    [forwarded] = smtp_server.received
    assert (forwarded.recipient, forwarded.envelope_from) == (INBOX, "news@acme.example")
    assert forwarded.data == on_the_wire(mail)  # unchanged: the replier's From, DKIM, the dot
    assert standing(workspace, "ada@example.com")[1] is None  # a reply suppresses nobody

    deliver(listener, address, mail, sender="ada@example.com")  # the very same mail again
    listener.handler.settle()
    assert len(replied_events(workspace)) == 1 and len(smtp_server.received) == 1
    assert listener.handler.counts == {"processed": 2, "unparseable": 0, "failed": 0}


def test_a_reply_the_relay_would_not_take_is_forwarded_when_it_does(
    workspace: Workspace, project: Path, listener: Listening, smtp_server: ScriptedSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay answers 451 to the forward, twice: the reply stays in new/ and is tried again
    (after RETRY_FIRST, then twice that), not only at the next start; recorded once,
    forwarded once."""
    monkeypatch.setattr(inbound, "RETRY_FIRST", 0.05)
    ada = sent(workspace, project, "newsletter", ["ada@example.com"])["ada@example.com"]
    address = reply_to(workspace, ada)
    mail = REPLY.replace(b"REPLY_TO", address.encode())
    smtp_server.script(INBOX, "451 4.3.0 Try again later", "451 4.3.0 Try again later")
    assert deliver(listener, address, mail, sender="ada@example.com").startswith("250")
    deadline = time.monotonic() + 10
    while listener.handler.counts["processed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert listener.handler.counts == {"processed": 1, "unparseable": 0, "failed": 2}
    assert [item.data for item in smtp_server.received] == [on_the_wire(mail)]
    assert len(replied_events(workspace)) == 1
    assert spool(workspace, "new") == [] and len(spool(workspace, "cur")) == 1


def test_a_reply_is_forwarded_through_the_fallback_relay_when_the_primary_is_down(
    project: Path, environ: dict[str, str], clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> None:
    primary = ScriptedSmtpServer()  # not started: its port refuses connections
    workspace = opened(project, environ, clock, TRACKING | {
        "SMTP__PORT": str(smtp_server.port), "DELIVERY__RENDER_PROCESSES": "0"})  # fmt: skip
    ada = sent(workspace, project, "newsletter", ["ada@example.com"])["ada@example.com"]
    address = reply_to(workspace, ada)
    workspace.close()
    workspace = opened(project, environ, clock, TRACKING | {
        "SMTP__PORT": str(primary.port), "SMTP__FALLBACKS__BACKUP__HOST": "127.0.0.1",
        "SMTP__FALLBACKS__BACKUP__PORT": str(smtp_server.port)})  # fmt: skip
    listening = start_inbound(workspace, LOOPBACK, free_port())
    try:
        mail = REPLY.replace(b"REPLY_TO", address.encode())
        assert deliver(listening, address, mail, sender="ada@example.com").startswith("250")
        listening.handler.settle()
        assert len(replied_events(workspace)) == 1
        forwards = [item for item in smtp_server.received if item.recipient == INBOX]
        assert [item.data for item in forwards] == [on_the_wire(mail)]
    finally:
        listening.stop()
        workspace.close()


def test_an_out_of_office_is_no_reply(
    workspace: Workspace, project: Path, listener: Listening, smtp_server: ScriptedSmtpServer
) -> None:
    ada = sent(workspace, project, "newsletter", ["ada@example.com"])["ada@example.com"]
    address = reply_to(workspace, ada)
    for mail in (OUT_OF_OFFICE, OUT_OF_OFFICE.replace(b"Auto-Submitted: auto-replied\n", b"")):
        deliver(listener, address, mail.replace(b"REPLY_TO", address.encode()), "ada@example.com")
    listener.handler.settle()
    assert replied_events(workspace) == [] and smtp_server.received == []
    assert len(spool(workspace, "cur")) == 2


def test_a_bounce_to_the_reply_address_is_a_bounce(
    workspace: Workspace, project: Path, listener: Listening, smtp_server: ScriptedSmtpServer
) -> None:
    ada = sent(workspace, project, "newsletter", ["ada@example.com"])["ada@example.com"]
    deliver(listener, reply_to(workspace, ada), fixture("postfix_user_unknown.eml"))
    listener.handler.settle()
    assert standing(workspace, "ada@example.com")[1] == "hard_bounce"
    assert replied_events(workspace) == [] and smtp_server.received == []


def test_a_reply_ends_an_exit_on_reply_sequence(
    workspace: Workspace, project: Path, listener: Listening, clock: FrozenClock
) -> None:
    ids = sent(workspace, project, "newsletter", ["ada@example.com", "bob@example.com"])
    clock.advance(timedelta(days=1))  # Ada answers the next day
    address = reply_to(workspace, ids["ada@example.com"])
    deliver(listener, address, REPLY.replace(b"REPLY_TO", address.encode()), "ada@example.com")
    listener.handler.settle()

    tick(workspace.engine, workspace.settings, NOW + timedelta(days=2))
    with workspace.engine.connect() as connection:
        runs = {
            row.contact_id: (row.status, row.reason)
            for row in connection.execute(
                select(enrollments.c.contact_id, enrollments.c.status, enrollments.c.reason)
            )
        }
        tips = connection.scalars(select(outbox.c.contact_id).where(outbox.c.step == "tips"))
        queued_tips = set(tips)
    ada, bob = (_contact_id(workspace, ids[f"{name}@example.com"]) for name in ("ada", "bob"))
    assert runs[ada] == ("exited", "replied")
    assert queued_tips == {bob}  # who did not reply goes on


def test_a_reply_stops_a_queued_step_at_sending(
    workspace: Workspace,
    project: Path,
    listener: Listening,
    smtp_server: ScriptedSmtpServer,
    clock: FrozenClock,
) -> None:
    ada = sent(workspace, project, "newsletter", ["ada@example.com"])["ada@example.com"]
    tick(workspace.engine, workspace.settings, NOW + timedelta(days=2))  # tips queued
    clock.advance(timedelta(days=2, minutes=1))  # Ada answers before it goes out
    address = reply_to(workspace, ada)
    deliver(listener, address, REPLY.replace(b"REPLY_TO", address.encode()), "ada@example.com")
    listener.handler.settle()
    smtp_server.received.clear()

    send_due(workspace, timedelta(days=2, minutes=2))
    with workspace.engine.connect() as connection:
        tips = connection.execute(select(outbox.c.status, outbox.c.reason)
                                  .where(outbox.c.step == "tips")).one()  # fmt: skip
    assert tips.status == "skipped" and "replied" in (tips.reason or "")
    assert smtp_server.received == []


def _contact_id(workspace: Workspace, outbox_id: int) -> int:
    with workspace.engine.connect() as connection:
        return int(connection.scalar(
            select(outbox.c.contact_id).where(outbox.c.id == outbox_id)))  # fmt: skip


def test_reply_to_is_a_reply_address_only_when_replies_are_tracked(
    project: Path, environ: dict[str, str], clock: FrozenClock
) -> None:
    tracked = opened(project, environ, clock, TRACKING)
    untracked = opened(project, environ, clock, {})
    plain = opened(project, environ, clock, {"SENDER__REPLY_TO": "care@acme.example"})
    try:
        sent(tracked, project, "newsletter", ["ada@example.com"])
        local, _, domain = reply_to(tracked, 1).partition("@")
        assert domain == "acme.example" and local.startswith("reply+")
        assert verify(tracked.renderer.keys, "reply", local.removeprefix("reply+")) == ["m1"]
        assert reply_to(untracked, 1) == "None"  # no Reply-To at all
        assert reply_to(plain, 1) == "care@acme.example"
    finally:
        for workspace in (tracked, untracked, plain):
            workspace.close()


def test_reply_tracking_needs_a_person_to_forward_to(
    project: Path, environ: dict[str, str]
) -> None:
    variables = {"MAILER_SENDER__REPLY_TRACKING": "true"}
    with pytest.raises(SettingsError, match=r"inbound\.replies_to"):
        load_settings(project / "settings.toml", environ=environ | variables)
