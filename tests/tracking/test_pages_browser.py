"""The pages a person sees, driven in a real browser: Playwright with Debian's chromium (its
executable, never a browser download), JavaScript off, a phone-sized window. Skipped with
the reason where no chromium is installed (`make test` installs it where it can)."""

from __future__ import annotations

import email
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailer.store.tables import consent_status, contacts, events, suppressions
from mailer.tokens import sign
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.browser import browser_page, needs_chromium
from tests.tracking.conftest import BASE, at

Serve = Callable[..., AbstractContextManager[str]]
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")

pytestmark = needs_chromium


@pytest.fixture
def phone() -> Iterator[object]:
    """A page in a 375x740 window (an iPhone's width), JavaScript disabled."""
    # A phone's user agent: headless Chromium's own says "HeadlessChrome", which the
    # endpoint rightly takes for a machine.
    with browser_page(viewport={"width": 375, "height": 740}, java_script_enabled=False,
                      user_agent=IPHONE) as page:  # fmt: skip
        yield page


def status_of(workspace: Workspace, list_name: str) -> str:
    with workspace.engine.connect() as connection:
        return str(connection.scalar(select(consent_status.c.status).where(
            consent_status.c.purpose == list_name)))  # fmt: skip


def test_a_person_leaves_the_newsletter_then_everything_in_a_browser(
    sent: tuple[Workspace, dict[str, str]], serve: Serve, phone: object, project: Path
) -> None:
    workspace, urls = sent
    page = phone
    with serve(create_app(workspace)) as base:
        page.goto(at(base, urls["unsubscribe"]))  # type: ignore[attr-defined]
        assert page.title() == "Email preferences"  # type: ignore[attr-defined]
        # Fits a phone: nothing wider than the window.
        width = page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
        assert width <= 375
        # Every button has a name a screen reader announces.
        buttons = page.get_by_role("button")  # type: ignore[attr-defined]
        names = [buttons.nth(i).get_attribute("aria-label") or buttons.nth(i).inner_text()
                 for i in range(buttons.count())]  # fmt: skip
        assert all(name.strip() for name in names)
        assert "Unsubscribe from Newsletter" in names
        assert status_of(workspace, "newsletter") == "confirmed"  # opening the page changes nothing

        page.get_by_role("button", name="Unsubscribe from Newsletter").click()  # type: ignore[attr-defined]
        assert page.get_by_role("status").inner_text().startswith(  # type: ignore[attr-defined]
            "You are unsubscribed from Newsletter")
        assert status_of(workspace, "newsletter") == "withdrawn"

        page.get_by_role("button", name="Unsubscribe from everything").click()  # type: ignore[attr-defined]
        assert "everything" in page.get_by_role("status").inner_text()  # type: ignore[attr-defined]
    with workspace.engine.connect() as connection:
        assert connection.scalar(select(suppressions.c.reason)) == "unsubscribed"
    assert BASE in urls["unsubscribe"]


def test_a_lead_confirms_from_the_email_and_answers_a_survey_in_a_browser(
    sent: tuple[Workspace, dict[str, str]], serve: Serve, phone: object,
    smtp_server: ScriptedSmtpServer,
) -> None:
    workspace, _urls = sent
    page = phone
    with serve(create_app(workspace)) as base:
        answer = httpx.post(f"{base}/subscribe", data={
            "email": "zoe@example.com", "first_name": "Zoë", "list": "newsletter",
            "consent": "yes", "consent_text_version": "v3"})  # fmt: skip
        assert answer.status_code == 200
        deadline = time.monotonic() + 5
        while len(smtp_server.received) < 2:  # Ada's welcome, then Zoë's confirmation
            assert time.monotonic() < deadline, "no confirmation email"
            time.sleep(0.02)
        text = email.message_from_bytes(smtp_server.received[1].data, policy=default_policy)
        link = re.search(rf"{BASE}/confirm/[\w.-]+", text.get_body(("plain",)).get_content())  # type: ignore[union-attr]
        assert link is not None
        page.goto(at(base, link.group(0)))  # type: ignore[attr-defined]
        assert page.get_by_role("heading").inner_text() == "You're subscribed"  # type: ignore[attr-defined]

        # A one-click survey answer, then the optional comment through the labelled box.
        workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]  # no scanner
        token = sign(workspace.renderer.keys, "survey", "m1", "nps", "9")
        page.goto(f"{base}/s/{token}")  # type: ignore[attr-defined]
        assert page.get_by_role("heading").inner_text() == "Thank you"  # type: ignore[attr-defined]
        page.get_by_label("Anything you would like to add? (optional)").fill("More decaf, please")  # type: ignore[attr-defined]
        page.get_by_role("button", name="Send comment").click()  # type: ignore[attr-defined]
        width = page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
        assert width <= 375
    with workspace.engine.connect() as connection:
        zoe = select(consent_status.c.status).join(
            contacts, contacts.c.id == consent_status.c.contact_id
        ).where(contacts.c.email == "zoe@example.com")  # fmt: skip
        assert connection.scalar(zoe) == "confirmed"
        properties = connection.scalar(select(events.c.properties).where(
            events.c.name == "survey_answer", events.c.kind == "website"))  # fmt: skip
    assert properties["value"] == 9 and properties["comment"] == "More decaf, please"
