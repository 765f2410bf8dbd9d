"""A real HTTP server for the tracking tests: uvicorn on a free loopback port, in a thread."""

from __future__ import annotations

import email
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.policy import default as default_policy
from pathlib import Path

import pytest
import uvicorn
from starlette.types import ASGIApp

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer

BASE = "http://127.0.0.1:8025"  # tracking.base_url of the test project


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running(app: ASGIApp) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 until the block ends (lifespan included); yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def serve() -> Callable[[ASGIApp], object]:
    """`with serve(app) as base_url: ...`"""
    return running


def at(base: str, url: str) -> str:
    return url.replace(BASE, base)


@pytest.fixture
def sent(
    project: Path, environ: dict[str, str], clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> Iterator[tuple[Workspace, dict[str, str]]]:
    """A workspace where Ada was sent the welcome message; the URLs in it by kind."""
    (project / "templates" / "welcome" / "1.html").write_text(
        '<p>Hello {{ contact.first_name }}</p><p><a href="https://shop.example/beans?a=1">Shop'
        '</a> <a href="https://shop.example/cups">Cups</a> <a href="https://shop.example/grinders">'
        "Grinders</a></p>"
        '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    )
    settings = load_settings(project / "settings.toml", environ={
        **environ, "MAILER_SMTP__PORT": str(smtp_server.port),
        "MAILER_DELIVERY__RENDER_PROCESSES": "0", "MAILER_TRACKING__FLUSH_SIZE": "1"})  # fmt: skip
    workspace = Workspace(settings, clock)
    queue_welcome(workspace, project, "ada@example.com,Ada")
    assert deliver(workspace).sent == 1
    message = email.message_from_bytes(smtp_server.received[0].data, policy=default_policy)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    clicks = re.findall(rf'href="({BASE}/c/[^"]+)">', html)  # not the hidden honeypot
    honeypot = re.search(rf'href="({BASE}/c/[^"]+)" style="display:none"', html)
    urls = {"open": re.search(rf'src="({BASE}/o/[^"]+)"', html).group(1),  # type: ignore[union-attr]
            "shop": clicks[0], "cups": clicks[1], "grinders": clicks[2],
            "honeypot": honeypot.group(1),  # type: ignore[union-attr]
            "unsubscribe": re.search(r"<(http[^>]+)>", message["List-Unsubscribe"]).group(1)}  # type: ignore[union-attr]
    yield workspace, urls
    workspace.close()
