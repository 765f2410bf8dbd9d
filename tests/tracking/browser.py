"""A page in a real browser for the browser tests: Playwright with Debian's chromium (its
executable, never a browser download). Skipped with the reason where no chromium is installed
(`make test` installs it where it can)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: `apt-get install chromium` (make test does, as root)"
)


@contextmanager
def browser_page(**context: Any) -> Iterator[Any]:
    """A new page of a headless chromium whose browser context has these options."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])  # fmt: skip
        yield browser.new_context(**context).new_page()
        browser.close()
