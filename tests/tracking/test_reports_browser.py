"""/reports in a real browser: Playwright with Debian's chromium (its executable, never a
browser download), as tests/tracking/test_pages_browser.py starts it. The page is opened with
the credentials of settings over a campaign seeded through the real paths; its charts must be
drawn (each SVG a box of some size), and every number in it must be `mailer report --json`'s.
A screenshot is saved (REPORT_SCREENSHOT=FILE writes it there too: docs/report.png)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from mailer.clock import FrozenClock
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.reports.page_numbers import report_numbers
from tests.tracking.browser import browser_page, needs_chromium
from tests.tracking.report_seed import PASSWORD, seeded_workspace
from tests.tracking.test_reports_page import cli_json

Serve = Callable[..., AbstractContextManager[str]]

pytestmark = needs_chromium
NUMBERS = """() => Array.from(document.querySelectorAll('[data-metric]'), e => [
  e.dataset.campaign, e.dataset.step, e.dataset.variant, e.dataset.metric, e.dataset.date || '',
  e.dataset.value, e.textContent.trim()])"""
DRAWN = "svg => { const box = svg.getBBox(); return [box.width, box.height]; }"


@pytest.fixture
def desk() -> Iterator[Any]:
    """A browser window of a laptop's size, signed in as the marketer of settings."""
    with browser_page(viewport={"width": 1280, "height": 1100}, java_script_enabled=False,
                      http_credentials={"username": "marketer",
                                        "password": PASSWORD}) as page:  # fmt: skip
        yield page


@pytest.fixture
def seeded(project: Path, environ: dict[str, str], clock: FrozenClock,
           smtp_server: ScriptedSmtpServer) -> Iterator[Workspace]:  # fmt: skip
    workspace = seeded_workspace(project, environ, clock, smtp_server)
    yield workspace
    workspace.close()


def test_the_report_in_a_browser_draws_its_charts_and_shows_the_numbers_of_json(
    seeded: Workspace, serve: Serve, desk: Any, project: Path, environ: dict[str, str],
    clock: FrozenClock, tmp_path: Path,
) -> None:  # fmt: skip
    page = desk
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    with serve(create_app(seeded)) as base:
        answer = page.goto(f"{base}/reports")
        assert answer.status == 200
        assert page.title() == "Campaign report"
        charts = page.locator("figure[data-chart]")
        kinds = [charts.nth(i).get_attribute("data-chart") for i in range(charts.count())]
        assert kinds == ["funnel", "timeline", "variants"]
        for i in range(charts.count()):
            svg = charts.nth(i).locator("svg")
            box = svg.bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 50, kinds[i]
            width, height = svg.evaluate(DRAWN)  # what is drawn inside, not only the frame
            assert width > 100 and height > 50, kinds[i]
        assert "reached tips" in charts.nth(0).inner_text()
        shown = page.evaluate(NUMBERS)
        screenshot = page.screenshot(path=str(tmp_path / "report.png"))
    assert fetched == [f"{base}/reports"]  # nothing else: no font, style or script
    expected = report_numbers(cli_json(project, environ, clock))
    assert {tuple(row[:5]): json.loads(row[5]) for row in shown} == expected
    assert len(shown) == len(expected)
    for *key, value, text in shown:
        if value.isdigit():  # a count is shown as it is
            assert text == value, key
    assert ("welcome", "tips", "B", "rates.open.value", "") in expected
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get("REPORT_SCREENSHOT"):
        Path(target).write_bytes(screenshot)
