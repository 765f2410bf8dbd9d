"""The lead form against a stranger (issue 13): it cannot undo an opt-out, join a list that is
not open to forms, change a contact's data, put their text into the brand's mail, or tell by
its answer or its timing whether an address is held. Real uvicorn, real SMTP (aiosmtpd)."""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.types import ASGIApp

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.consent.ledger import verify as verify_ledger
from mailer.consent.person import lift_suppression, withdraw
from mailer.consent.replay import projection_findings
from mailer.consent.suppressions import Reason, suppress
from mailer.contacts.addresses import address_hash
from mailer.delivery.writer import suppress_hard_bounce
from mailer.store.tables import consent_entries, contacts, ledger_head
from mailer.tracking.forms import form_routes
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import count
from tests.tracking.test_forms import (
    BROWSER,
    REPOSITORY,
    confirm_url,
    entries,
    received,
    status,
    subscribe,
)

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
Forms = tuple[Workspace, Starlette]
SCAM = "URGENT: verify your card at evil.example"


def form_app(project: Path, environ: dict[str, str], clock: FrozenClock,
             smtp_server: ScriptedSmtpServer, open_lists: tuple[str, ...]) -> Forms:  # fmt: skip
    for name in ("confirm.html", "confirm.txt"):
        shutil.copy(REPOSITORY / "templates" / name, project / "templates" / name)
    opened = {f"MAILER_LISTS__{name.upper()}__FORMS": "true" for name in open_lists}
    relay = {**environ, **opened, "MAILER_SMTP__PORT": str(smtp_server.port)}
    workspace = Workspace(load_settings(project / "settings.toml", environ=relay), clock)
    return workspace, Starlette(routes=form_routes(workspace))


@pytest.fixture
def forms(
    project: Path, environ: dict[str, str], clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> Iterator[Forms]:
    """Both lists of the test project open to forms: newsletter (double opt-in), leads (not)."""
    workspace, app = form_app(project, environ, clock, smtp_server, ("newsletter", "leads"))
    yield workspace, app
    workspace.close()


def withdrawn(workspace: Workspace, list_name: str) -> None:
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "ada@example.com", workspace.double_opt_in,
                 workspace.clock.now(), list_name=list_name, source="unsubscribe")  # fmt: skip
    workspace.clock.advance(timedelta(minutes=11))  # type: ignore[attr-defined]


def subscribed(workspace: Workspace, app: Starlette, serve: Serve, smtp_server: ScriptedSmtpServer,
               list_name: str, **fields: str) -> None:  # fmt: skip
    """Ada subscribed to `list_name` through the form (confirmed by her link on newsletter)."""
    with serve(app) as base:
        subscribe(base, list=list_name, **fields)
        if list_name == "newsletter":
            [message] = received(smtp_server, 1)
            assert httpx.get(confirm_url(message, base)).status_code == 200
    smtp_server.received.clear()


@pytest.mark.parametrize("list_name", ["leads", "newsletter"])
def test_a_stranger_cannot_undo_an_unsubscribe_only_the_mailbox_can(
    forms: Forms, smtp_server: ScriptedSmtpServer, serve: Serve, list_name: str
) -> None:
    workspace, app = forms
    subscribed(workspace, app, serve, smtp_server, list_name)
    withdrawn(workspace, list_name)
    before = entries(workspace)
    with serve(app) as base:
        stranger = subscribe(base, list=list_name)
        [message] = received(smtp_server, 1)
        assert status(workspace, list_name) == "withdrawn" and entries(workspace) == before
        link = confirm_url(message, base)
        scanner = httpx.head(link)
        assert scanner.status_code == 200 and status(workspace, list_name) == "withdrawn"
        confirmed = httpx.get(link, headers={"User-Agent": BROWSER})
    assert stranger.status_code == 200 and confirmed.status_code == 200
    assert message["To"] == "ada@example.com"
    assert status(workspace, list_name) == "confirmed"
    grant, confirmation = entries(workspace)[len(before) :]
    assert grant[:3] == (list_name, "granted", "form")
    assert grant[3] is not None and grant[3]["consent_text_version"] == "2026-11"
    assert grant[3]["form_id"] == "footer" and "ip" not in grant[3]  # not the stranger's
    assert confirmation[:3] == (list_name, "confirmed", "form")
    assert confirmation[3] == {"at": workspace.clock.now().isoformat(), "ip": "127.0.0.1",
                               "user_agent": BROWSER}  # fmt: skip
    with workspace.engine.connect() as connection:
        assert verify_ledger(connection).intact


def test_a_link_sent_before_an_unsubscribe_cannot_undo_it(
    forms: Forms, smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        subscribe(base)
        [first] = received(smtp_server, 1)
        withdrawn(workspace, "newsletter")
        subscribe(base)  # a stranger again: a new link, for the opt-out that now stands
        _, second = received(smtp_server, 2)
        old = httpx.get(confirm_url(first, base))
        assert old.status_code == 410 and status(workspace) == "withdrawn"
        new = httpx.get(confirm_url(second, base))
        again = httpx.get(confirm_url(second, base))
    assert new.status_code == again.status_code == 200 and status(workspace) == "confirmed"
    assert [action for _, action, _, _ in entries(workspace)] == [
        "granted", "withdrawn", "granted", "confirmed"]  # fmt: skip


@pytest.mark.parametrize("reason", ["complained", "hard_bounce", "unsubscribed"])
def test_a_suppressed_address_is_neither_resubscribed_nor_mailed(
    forms: Forms, smtp_server: ScriptedSmtpServer, serve: Serve, reason: Reason
) -> None:
    workspace, app = forms
    subscribed(workspace, app, serve, smtp_server, "leads")
    with workspace.engine.begin() as connection:
        suppress(connection, address_hash=address_hash(workspace.key, "ada@example.com"),
                 email="ada@example.com", reason=reason, now=workspace.clock.now())  # fmt: skip
    with serve(app) as base:
        answers = [subscribe(base, list=name) for name in ("leads", "newsletter")]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert [action for _, action, _, _ in entries(workspace)] == ["granted"]
    assert smtp_server.received == []  # the server has stopped: the queued work is done


def test_after_an_operator_lifts_a_hard_bounce_only_the_persons_own_confirmation_resubscribes(
    forms: Forms, smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    """Ada's mailbox bounced (suppressed, every list withdrawn); she asks to come back. Before
    the lift the form mails her nothing; after it, the form sends a confirmation, and only
    its link subscribes her again: a stranger typing her address gets no further."""
    workspace, app = forms
    subscribed(workspace, app, serve, smtp_server, "newsletter")
    with workspace.engine.begin() as connection:
        suppress_hard_bounce(connection, workspace, "ada@example.com", workspace.clock.now(),
                             "550 5.1.1 user unknown")  # fmt: skip
    workspace.clock.advance(timedelta(minutes=11))  # type: ignore[attr-defined]
    with serve(app) as base:
        subscribe(base, list="newsletter")
    assert smtp_server.received == [] and status(workspace) == "withdrawn"  # work done

    with workspace.engine.begin() as connection:
        lift_suppression(connection, workspace.key, "ada@example.com", workspace.clock.now(),
                         '{"reason":"asked by phone"}')  # fmt: skip
    assert status(workspace) == "withdrawn"  # a lift grants nothing
    with serve(app) as base:
        subscribe(base, list="newsletter")
        [confirmation] = received(smtp_server, 1)
        assert httpx.get(confirm_url(confirmation, base)).status_code == 200
    assert status(workspace) == "confirmed"
    assert [(purpose, action) for purpose, action, _, _ in entries(workspace)][-4:] == [
        ("*", "withdrawn"), ("*", "lifted"), ("newsletter", "granted"),
        ("newsletter", "confirmed")]  # fmt: skip
    with workspace.engine.connect() as connection:
        assert verify_ledger(connection).intact
        assert projection_findings(connection, workspace.key) == []


def test_a_list_not_open_to_forms_is_a_400_and_nothing_is_written(
    project: Path, environ: dict[str, str], clock: FrozenClock,
    smtp_server: ScriptedSmtpServer, serve: Serve,
) -> None:  # fmt: skip
    workspace, app = form_app(project, environ, clock, smtp_server, ("newsletter",))
    with serve(app) as base:
        closed = subscribe(base, list="leads")
        unknown = subscribe(base, list="vip")
        honeypot = subscribe(base, list="leads", website="https://spam.example")
    assert closed.status_code == unknown.status_code == 400
    assert "&#x27;leads&#x27; is not a list you can join here" in closed.text
    assert honeypot.status_code == 200  # a bot learns nothing
    assert count(workspace, contacts) == 0 and count(workspace, consent_entries) == 0
    assert smtp_server.received == []
    workspace.close()


def test_the_shipped_settings_open_the_newsletter_to_forms_and_not_the_leads() -> None:
    shipped = tomllib.loads((REPOSITORY / "settings.toml").read_text())["lists"]
    assert shipped["newsletter"]["forms"] is True
    assert shipped["leads"].get("forms", False) is False


def test_a_form_never_changes_an_existing_contacts_names(
    forms: Forms, smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    subscribed(workspace, app, serve, smtp_server, "newsletter", first_name="", last_name="")
    before = entries(workspace)
    workspace.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    with serve(app) as base:
        subscribe(base, first_name=SCAM, last_name="Mallory")
        subscribe(base, list="leads", first_name=SCAM, last_name="Mallory")
    with workspace.engine.connect() as connection:
        names = connection.execute(select(contacts.c.first_name, contacts.c.last_name)).one()
    assert tuple(names) == (None, None)
    assert [action for _, action, _, _ in entries(workspace)[len(before) :]] == ["granted"]


def test_a_new_contacts_names_are_kept_but_never_put_in_the_confirmation_email(
    forms: Forms, smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        subscribe(base, first_name=SCAM, last_name="Mallory")
        [message] = received(smtp_server, 1)
    with workspace.engine.connect() as connection:
        names = connection.execute(select(contacts.c.first_name, contacts.c.last_name)).one()
    assert tuple(names) == (SCAM, "Mallory")
    assert message["To"] == "ada@example.com"
    assert SCAM not in str(message["Subject"]) and "Mallory" not in str(message["Subject"])
    for part in ("plain", "html"):
        body = message.get_body((part,)).get_content()  # type: ignore[union-attr]
        assert "Hi there" in body and "evil.example" not in body and "Mallory" not in body


def test_the_answer_is_the_same_for_new_known_suppressed_and_withdrawn_addresses(
    forms: Forms, smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    clock: FrozenClock = workspace.clock  # type: ignore[assignment]
    for email in ("known@example.com", "gone@example.com"):
        subscribed(workspace, app, serve, smtp_server, "leads", email=email)
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "gone@example.com", workspace.double_opt_in,
                 clock.now(), list_name="leads")  # fmt: skip
        suppress(connection, address_hash=address_hash(workspace.key, "bad@example.com"),
                 email="bad@example.com", reason="complained", now=clock.now())  # fmt: skip
    clock.advance(timedelta(minutes=1))
    with serve(app) as base:
        answers = [subscribe(base, list="leads", email=email) for email in
                   ("new@example.com", "known@example.com", "bad@example.com",
                    "gone@example.com")]  # fmt: skip
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.text for answer in answers}) == 1 and "Thank you" in answers[0].text
    headers = [{k: v for k, v in answer.headers.items() if k != "date"} for answer in answers]
    assert all(each == headers[0] for each in headers)
    assert [item.recipient for item in smtp_server.received] == ["gone@example.com"]


def test_the_answer_is_written_before_the_address_is_looked_up(
    forms: Forms, smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        with workspace.engine.begin() as connection:
            # Hold the ledger's lock (SQLite: the write lock) so no look-up can happen yet.
            connection.execute(select(ledger_head.c.last_id).with_for_update())
            answer = httpx.post(f"{base}/subscribe", timeout=5, data={
                "email": "ada@example.com", "list": "newsletter", "consent": "yes",
                "consent_text_version": "2026-11"})  # fmt: skip
            assert connection.scalar(select(contacts.c.id)) is None  # not looked up yet
        [message] = received(smtp_server, 1)  # the queued work runs once the lock is free
    assert answer.status_code == 200 and "Check your inbox to confirm" in answer.text
    # Each answer closes its connection: a next request on it would wait for the queued work.
    assert answer.headers["connection"] == "close"
    assert message["To"] == "ada@example.com" and status(workspace) == "pending"
