"""The lead form and its double opt-in over real HTTP (uvicorn) and real SMTP (aiosmtpd):
POST /subscribe, the confirmation email, GET /confirm/<token>."""

from __future__ import annotations

import email
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.types import ASGIApp

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.consent.ledger import verify as verify_ledger
from mailer.consent.suppressions import suppress
from mailer.contacts.addresses import address_hash
from mailer.delivery.relay_board import downs_by_name
from mailer.store.tables import (
    consent_entries,
    consent_evidence,
    consent_status,
    contacts,
    memberships,
)
from mailer.tokens import TokenKeys, sign
from mailer.tracking.forms import form_routes
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import count
from tests.tracking.conftest import BASE

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
REPOSITORY = Path(__file__).resolve().parents[2]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"


@pytest.fixture
def forms(
    project: Path, environ: dict[str, str], clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> Iterator[tuple[Workspace, Starlette]]:
    """A workspace whose relay is the test SMTP server, with the shipped confirm templates,
    both lists open to forms, and the form routes as an app."""
    for name in ("confirm.html", "confirm.txt"):
        shutil.copy(REPOSITORY / "templates" / name, project / "templates" / name)
    relay = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
             "MAILER_LISTS__NEWSLETTER__FORMS": "true", "MAILER_LISTS__LEADS__FORMS": "true"}
    settings = load_settings(project / "settings.toml", environ=relay)
    workspace = Workspace(settings, clock)
    yield workspace, Starlette(routes=form_routes(workspace))
    workspace.close()


def subscribe(base: str, **fields: str) -> httpx.Response:
    """POST the landing page's form, as a browser does; `fields` change the defaults."""
    return _post(base, fields, as_json=False)


def subscribe_json(base: str, **fields: str) -> httpx.Response:
    """POST the same fields as JSON, as a script on the page may."""
    return _post(base, fields, as_json=True)


def _post(base: str, fields: dict[str, str], as_json: bool) -> httpx.Response:
    form = {"email": "ada@example.com", "first_name": "Ada", "list": "newsletter",
            "consent": "yes", "consent_text_version": "2026-11", "form_id": "footer",
            "website": ""} | fields  # fmt: skip
    headers = {"User-Agent": BROWSER}
    if as_json:
        return httpx.post(f"{base}/subscribe", json=form, headers=headers)
    return httpx.post(f"{base}/subscribe", data=form, headers=headers)


def received(server: ScriptedSmtpServer, expected: int) -> list[EmailMessage]:
    """The messages the server got, once there are `expected` (at most 5 s of polling)."""
    deadline = time.monotonic() + 5
    while len(server.received) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return [email.message_from_bytes(item.data, policy=default_policy)
            for item in server.received]  # fmt: skip


def confirm_url(message: EmailMessage, base: str) -> str:
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    found = re.search(rf"{BASE}/confirm/\S+", text)
    assert found is not None, text
    return found.group(0).replace(BASE, base)


def status(workspace: Workspace, list_name: str = "newsletter") -> str | None:
    with workspace.engine.connect() as connection:
        value: str | None = connection.scalar(
            select(consent_status.c.status).join(contacts)
            .where(contacts.c.email == "ada@example.com", consent_status.c.purpose == list_name)
        )  # fmt: skip
        return value


def entries(workspace: Workspace) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(consent_entries.c.purpose, consent_entries.c.action,
                   consent_entries.c.source, consent_evidence.c.data)
            .outerjoin(consent_evidence, consent_evidence.c.entry_id == consent_entries.c.id)
            .order_by(consent_entries.c.id)
        )  # fmt: skip
        return [(r.purpose, r.action, r.source, json.loads(r.data) if r.data else None)
                for r in rows]  # fmt: skip


def test_a_double_opt_in_subscription_is_pending_until_the_emailed_link_confirms_it(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        answer = subscribe(base)
        assert answer.status_code == 200 and "Check your inbox to confirm" in answer.text
        [message] = received(smtp_server, 1)  # sent after the grant, behind the answer
        assert status(workspace) == "pending"
        confirmed = httpx.get(confirm_url(message, base), headers={"User-Agent": BROWSER})
    assert confirmed.status_code == 200 and "You&#x27;re subscribed" in confirmed.text
    assert status(workspace) == "confirmed"
    assert len(smtp_server.received) == 1
    [grant, confirmation] = entries(workspace)
    assert grant[:3] == ("newsletter", "granted", "form")
    assert grant[3] == {"at": "2026-11-23T10:00:00+00:00", "ip": "127.0.0.1",
                        "user_agent": BROWSER, "consent_text_version": "2026-11",
                        "form_id": "footer", "source": "form"}  # fmt: skip
    assert confirmation[:3] == ("newsletter", "confirmed", "form")
    assert confirmation[3] == {"at": "2026-11-23T10:00:00+00:00", "ip": "127.0.0.1",
                               "user_agent": BROWSER}  # fmt: skip
    with workspace.engine.connect() as connection:
        assert verify_ledger(connection).intact
        assert connection.scalar(select(memberships.c.source)) == "form:footer"
    assert message["Subject"] == "Please confirm your subscription to Newsletter"
    assert message["From"] == "Acme Coffee <news@acme.example>"
    assert message["To"] == "ada@example.com"  # a name typed into a form is not used
    assert smtp_server.received[0].recipient == "ada@example.com"
    for part in ("plain", "html"):
        body = message.get_body((part,)).get_content()  # type: ignore[union-attr]
        assert "Bristol BS1 4DJ" in body and "Hi there" in body


def test_the_confirmation_email_fails_over_to_a_fallback_relay_when_the_primary_is_down(
    project: Path, environ: dict[str, str], clock: FrozenClock,
    smtp_server: ScriptedSmtpServer, serve: Serve,
) -> None:  # fmt: skip
    for name in ("confirm.html", "confirm.txt"):
        shutil.copy(REPOSITORY / "templates" / name, project / "templates" / name)
    primary = ScriptedSmtpServer()  # not started: its port refuses connections
    relays = {**environ, "MAILER_SMTP__PORT": str(primary.port),
              "MAILER_SMTP__FALLBACKS__BACKUP__HOST": "127.0.0.1",
              "MAILER_SMTP__FALLBACKS__BACKUP__PORT": str(smtp_server.port),
              "MAILER_LISTS__NEWSLETTER__FORMS": "true"}  # fmt: skip
    workspace = Workspace(load_settings(project / "settings.toml", environ=relays), clock)
    try:
        with serve(Starlette(routes=form_routes(workspace))) as base:
            assert subscribe(base).status_code == 200
            [message] = received(smtp_server, 1)
        assert message["To"] == "ada@example.com" and status(workspace) == "pending"
        with workspace.engine.connect() as connection:  # found down for every process
            assert set(downs_by_name(connection, workspace.settings)) == {"primary"}
    finally:
        workspace.close()


def test_a_single_opt_in_subscription_is_granted_at_once_and_sends_no_email(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        answer = subscribe(base, list="leads")
    assert answer.status_code == 200 and "Thank you" in answer.text
    assert status(workspace, "leads") == "granted"
    assert smtp_server.received == []  # the server has stopped: background work is done


def test_the_answer_is_the_same_for_new_pending_and_confirmed_addresses(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    clock: FrozenClock = workspace.clock  # type: ignore[assignment]
    with serve(app) as base:
        new = subscribe(base)
        again = subscribe(base)  # pending: within 10 minutes, no second email
        [message] = received(smtp_server, 1)
        assert httpx.get(confirm_url(message, base)).status_code == 200
        confirmed = subscribe(base)
        other = subscribe(base, email="bob@example.com", first_name="")
        clock.advance(timedelta(minutes=1))  # the per-IP limit: 5 a minute
        as_json = [subscribe_json(base), subscribe_json(base, email="eve@example.com")]
        received(smtp_server, 2)
    assert {answer.status_code for answer in (new, again, confirmed, other)} == {200}
    assert new.text == again.text == confirmed.text == other.text
    assert as_json[0].json() == as_json[1].json()
    assert as_json[0].json()["result"] == "check_inbox"
    assert sorted(item.recipient for item in smtp_server.received) == [
        "ada@example.com", "bob@example.com", "eve@example.com"]  # fmt: skip
    assert status(workspace) == "confirmed"


def test_a_filled_honeypot_gets_the_usual_answer_and_records_nothing(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        bot = subscribe(base, website="https://spam.example")
        person = subscribe(base, email="bob@example.com")
    assert bot.status_code == 200 and bot.text == person.text
    with workspace.engine.connect() as connection:
        assert connection.scalar(select(contacts.c.email)
                                 .where(contacts.c.email == "ada@example.com")) is None  # fmt: skip
    assert [recipient.recipient for recipient in smtp_server.received] == ["bob@example.com"]


@pytest.mark.parametrize(("field", "value", "said"), [
    ("consent", "", "consent: tick the box"),
    ("email", "ada@", "email: 'ada@' is not an email address"),
    ("list", "vip", "list: 'vip' is not a list you can join here"),
    ("consent_text_version", "", "consent_text_version: is required"),
    ("first_name", "Ada\r\nBcc: x@example.com", "first_name: contains control characters"),
])  # fmt: skip
def test_a_wrong_field_is_a_400_that_names_it_and_records_nothing(
    forms: tuple[Workspace, Starlette], serve: Serve, field: str, value: str, said: str
) -> None:
    workspace, app = forms
    with serve(app) as base:
        page = subscribe(base, **{field: value})
        data = subscribe_json(base, **{field: value})
    assert page.status_code == 400 and said in page.text.replace("&#x27;", "'")
    assert data.status_code == 400 and data.json()["field"] == field
    assert data.json()["error"].startswith(said)
    assert count(workspace, contacts) == 0 and count(workspace, consent_entries) == 0


def test_an_unreadable_body_is_refused(forms: tuple[Workspace, Starlette], serve: Serve) -> None:
    _workspace, app = forms
    with serve(app) as base:
        xml = httpx.post(f"{base}/subscribe", content=b"<x/>",
                         headers={"Content-Type": "text/xml"})  # fmt: skip
        huge = httpx.post(f"{base}/subscribe", data={"email": "a" * 20_000})
        listed = httpx.post(f"{base}/subscribe", json=["ada@example.com"])
    assert (xml.status_code, huge.status_code, listed.status_code) == (415, 413, 400)


def test_more_than_five_posts_a_minute_from_one_address_get_429(
    forms: tuple[Workspace, Starlette], serve: Serve
) -> None:
    workspace, app = forms
    clock: FrozenClock = workspace.clock  # type: ignore[assignment]
    with serve(app) as base:
        answers = [subscribe(base, consent="").status_code for _ in range(6)]
        refused = subscribe(base)
        clock.advance(timedelta(seconds=12))  # one more post is allowed every 12 s
        allowed = subscribe(base)
        again = subscribe(base)
    assert answers == [400] * 5 + [429]
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 12
    assert allowed.status_code == 200 and again.status_code == 429


def test_an_expired_link_is_a_410_and_confirms_nothing(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        subscribe(base)
        [message] = received(smtp_server, 1)
        workspace.clock.advance(timedelta(days=8))  # type: ignore[attr-defined]
        answer = httpx.get(confirm_url(message, base))
    assert answer.status_code == 410 and "This link has expired: subscribe again" in answer.text
    assert status(workspace) == "pending"


def test_a_forged_or_malformed_link_is_a_404(
    forms: tuple[Workspace, Starlette], serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        subscribe(base)
        forged = sign(TokenKeys(b"another-secret-key-0123456789abcdef"), "confirm", 1,
                      "newsletter", 2**40)  # fmt: skip
        answers = [httpx.get(f"{base}/confirm/{token}")
                   for token in (forged, "1.abc.def", "not-a-token")]  # fmt: skip
    assert [answer.status_code for answer in answers] == [404, 404, 404]
    assert "This link does not work" in answers[0].text
    assert status(workspace) == "pending"


def test_confirming_twice_shows_the_same_page_and_appends_one_entry(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with serve(app) as base:
        subscribe(base)
        [message] = received(smtp_server, 1)
        scanner = httpx.head(confirm_url(message, base))
        assert status(workspace) == "pending"  # a HEAD never confirms
        first = httpx.get(confirm_url(message, base))
        second = httpx.get(confirm_url(message, base))
    assert scanner.status_code == first.status_code == second.status_code == 200
    assert first.text == second.text
    assert [action for _, action, _, _ in entries(workspace)] == ["granted", "confirmed"]


def test_a_suppressed_address_gets_the_usual_answer_and_is_not_subscribed(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    workspace, app = forms
    with workspace.engine.begin() as connection:
        hashed = address_hash(workspace.key, "ada@example.com")
        suppress(connection, address_hash=hashed, email="ada@example.com",
                 reason="hard_bounce", now=workspace.clock.now())  # fmt: skip
    with serve(app) as base:
        blocked = subscribe(base)
        person = subscribe(base, email="bob@example.com")
    assert blocked.status_code == 200 and blocked.text == person.text
    assert status(workspace) is None and count(workspace, consent_entries) == 1  # Bob's
    with workspace.engine.connect() as connection:
        assert connection.scalar(select(contacts.c.id)
                                 .where(contacts.c.email == "ada@example.com")) is None  # fmt: skip
    assert [item.recipient for item in smtp_server.received] == ["bob@example.com"]


def test_a_person_who_left_subscribes_again_by_confirming_from_their_mailbox(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve
) -> None:
    from mailer.consent.person import withdraw

    workspace, app = forms
    clock: FrozenClock = workspace.clock  # type: ignore[assignment]
    with serve(app) as base:
        subscribe(base, list="leads", first_name="", last_name="Lovelace")
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "ada@example.com", workspace.double_opt_in,
                 clock.now(), list_name="leads")  # fmt: skip
    clock.advance(timedelta(hours=1))
    with serve(app) as base:
        subscribe(base, list="leads", first_name="Ada", last_name="")
        [message] = received(smtp_server, 1)
        assert status(workspace, "leads") == "withdrawn"  # until the mailbox says so
        assert httpx.get(confirm_url(message, base)).status_code == 200
    assert status(workspace, "leads") == "confirmed"
    with workspace.engine.connect() as connection:
        names = connection.execute(select(contacts.c.first_name, contacts.c.last_name)).one()
    assert tuple(names) == (None, "Lovelace")  # a form never changes a contact's data


def test_a_refused_confirmation_email_is_logged_and_may_be_asked_for_again(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, serve: Serve,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    _workspace, app = forms
    smtp_server.script("ada@example.com", "550 5.1.1 No such user")
    with serve(app) as base:
        first = subscribe(base)
    with serve(app) as base:  # the background send of the first request has ended
        second = subscribe(base)
    assert first.text == second.text
    [refused] = [r for r in caplog.records if r.getMessage() == "confirmation email refused"]
    assert str(vars(refused)["reply"]).startswith("550 5.1.1")
    assert vars(refused)["list"] == "newsletter"
    assert [item.recipient for item in smtp_server.received] == ["ada@example.com"]
