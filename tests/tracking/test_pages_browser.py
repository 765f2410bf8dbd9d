"""The pages a person sees, driven in a real browser: Playwright with Debian's chromium (its
executable, never a browser download), JavaScript off, a phone-sized window. Skipped with
the reason where no chromium is installed (`make test` installs it where it can)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.store.tables import consent_status, suppressions
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.tracking.conftest import BASE, at

Serve = Callable[..., AbstractContextManager[str]]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: `apt-get install chromium` (make test does, as root)"
)


@pytest.fixture
def phone() -> Iterator[object]:
    """A page in a 375x740 window (an iPhone's width), JavaScript disabled."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])  # fmt: skip
        context = browser.new_context(viewport={"width": 375, "height": 740},
                                      java_script_enabled=False)  # fmt: skip
        yield context.new_page()
        browser.close()


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
