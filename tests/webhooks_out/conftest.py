"""A real webhook receiver (http.server on a free loopback port, in a thread) that checks each
call with the documented `verify` and records it; and workspaces that subscribe it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.webhooks_out.signature import verify
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer

HOOK_SECRET = "whsec-test-0123456789abcdef"


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """Answers `status` (or hangs until released, with status "hang"); records every call."""

    url: str = ""
    status: int | str = 200
    calls: list[Call] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hanging: int = 0

    def wait_for(self, check: Callable[[], bool]) -> None:
        for _ in range(2000):  # bounded poll: no timed waits in tests
            if check():
                return
            time.sleep(0.005)
        raise AssertionError("the receiver never saw what was expected")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {key.lower(): value for key, value in self.headers.items()}
            state.calls.append(Call(headers, body, verify(HOOK_SECRET.encode(), headers, body)))
            if state.status == "hang":
                state.hanging += 1
                state.release.wait()  # until the test ends
                return
            self.send_response(int(state.status))
            self.end_headers()
            self.wfile.write(b"ok" if state.status == 200 else b"nope")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


Opener = Callable[..., Workspace]


@pytest.fixture
def hooked(project: Path, environ: dict[str, str], clock: FrozenClock,
           smtp_server: ScriptedSmtpServer, receiver: Receiver) -> Iterator[Opener]:  # fmt: skip
    """Workspaces over the test project, relay the scripted SMTP server, whose settings
    subscribe the receiver as [webhooks.outgoing.crm] to `events` (default every type)."""
    opened: list[Workspace] = []

    def open_(events: str = '["*"]', timeout: str = "5 s") -> Workspace:
        settings_file = project / "settings.toml"
        text = settings_file.read_text().split("\n[webhooks.outgoing.crm]")[0]
        settings_file.write_text(text + f'\n[webhooks.outgoing.crm]\nurl = "{receiver.url}"\n'
                                 f'events = {events}\ntimeout = "{timeout}"\n')  # fmt: skip
        variables = {"MAILER_SMTP__PORT": str(smtp_server.port),
                     "MAILER_DELIVERY__RENDER_PROCESSES": "0",
                     "MAILER_WEBHOOKS__OUTGOING__CRM__SECRET": HOOK_SECRET}  # fmt: skip
        opened.append(Workspace(load_settings(settings_file, environ=environ | variables), clock))
        return opened[-1]

    yield open_
    for workspace in opened:
        workspace.close()
