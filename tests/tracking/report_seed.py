"""A welcome sequence with something to report, made through the real paths: people imported
and the sequence ticked, mail sent into a real SMTP server, opens and clicks over real HTTP to
the tracking app on the days they happen, purchases recorded as events, the A/B tested second
step sent two days later. /reports is on, as `marketer` with PASSWORD."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path

import httpx

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.events import record_event
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.conftest import BASE, at, running

PASSWORD = "correct horse battery staple"
REPORTS = '\n[reports]\nusername = "marketer"\n'
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
          "Gecko) Chrome/126.0.0.0 Safari/537.36")  # fmt: skip
NAMES = ("Ada", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lou",
         "Max", "Ned", "Oda", "Pia", "Quin", "Rae", "Sam", "Tia")  # fmt: skip
TIPS_AT = timedelta(days=2, hours=1)  # the tick that queues and sends the second step


def _links(data: bytes) -> tuple[str, str]:
    """The open pixel's URL and the first visible link's in a sent message."""
    message = email.message_from_bytes(data, policy=default_policy)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    pixel = re.search(rf'src="({BASE}/o/[^"]+)"', html)
    links = re.findall(rf'href="({BASE}/c/[^"]+)">', html)
    assert pixel is not None and links
    return pixel.group(1), links[0]


def _visit(workspace: Workspace, urls: list[str]) -> None:
    """A person's browser fetches each URL (the writer's last batch is in when this returns)."""
    with running(create_app(workspace)) as base:
        for url in urls:
            answer = httpx.get(at(base, url), headers={"User-Agent": CHROME})
            assert answer.status_code in (200, 302), url


def seeded_workspace(project: Path, environ: dict[str, str], clock: FrozenClock,
                     smtp_server: ScriptedSmtpServer) -> Workspace:  # fmt: skip
    settings_path = project / "settings.toml"
    settings_path.write_text(settings_path.read_text().replace(
        "enroll_existing = true", "enroll_existing = true\ngoal = 'event \"purchased\"'")
        + REPORTS)  # fmt: skip
    footer = '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    for number, text in (("1", "Hello {{ contact.first_name }}"), ("2", "Tips")):
        (project / "templates" / "welcome" / f"{number}.html").write_text(
            f'<p>{text}</p><p><a href="https://shop.example/beans">Shop</a></p>' + footer
        )
    environ.update({"MAILER_SMTP__PORT": str(smtp_server.port), "MAILER_REPORTS__PASSWORD":
                    PASSWORD, "MAILER_DELIVERY__RENDER_PROCESSES": "0",
                    "MAILER_TRACKING__FLUSH_SIZE": "1"})  # fmt: skip
    workspace = Workspace(load_settings(settings_path, environ=environ), clock)
    queue_welcome(workspace, project, *(f"{n.lower()}@example.com,{n}" for n in NAMES))
    assert deliver(workspace).sent == len(NAMES)
    hello = [_links(message.data) for message in smtp_server.received]

    clock.advance(timedelta(minutes=5))  # a person reads later than a scanner at delivery
    _visit(workspace, [pixel for i, (pixel, _) in enumerate(hello) if i % 3 != 2]
           + [link for i, (_, link) in enumerate(hello) if i % 4 == 0])  # fmt: skip
    clock.advance(timedelta(days=1))
    _visit(workspace, [pixel for i, (pixel, _) in enumerate(hello) if i % 3 == 2 and i % 2]
           + [link for i, (_, link) in enumerate(hello) if i % 4 == 1])  # fmt: skip
    with workspace.engine.begin() as connection:
        for name in ("ada", "eve"):
            record_event(connection, f"{name}@example.com", "purchased", clock.now())

    tick(workspace.engine, workspace.settings, NOW + TIPS_AT)
    assert deliver(workspace, TIPS_AT).sent == len(NAMES) - 2  # the buyers have converted
    tips = [_links(message.data) for message in smtp_server.received[len(NAMES) :]]
    clock.advance(NOW + TIPS_AT + timedelta(minutes=30) - clock.now())
    _visit(workspace, [pixel for i, (pixel, _) in enumerate(tips) if i % 2 == 0]
           + [link for i, (_, link) in enumerate(tips) if i % 3 == 0])  # fmt: skip
    return workspace
