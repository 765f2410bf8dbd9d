"""Every link a recipient can follow answers: each step and variant of the example campaign is
rendered for a contact with consent, as it would be sent, and every URL of the tracking endpoint
in it (HTML href/src, the text part, the List-Unsubscribe header) is requested over real HTTP."""

from __future__ import annotations

import email
import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.model import load_contacts
from mailer.delivery.claims import message_key
from mailer.render.dkim import generate_key
from mailer.store.tables import consent_status, outbox
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.helpers import run_import

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8025"  # tracking.base_url of the example settings
Serve = Callable[..., AbstractContextManager[str]]


@dataclass(frozen=True)
class Sent:
    where: str  # campaign, step and variant, for the failure message
    message: EmailMessage


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("href", "src") and value]


def html_links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.found


def header_urls(message: EmailMessage) -> list[str]:
    return re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))


@pytest.fixture
def example(tmp_path: Path, environ: dict[str, str]) -> Iterator[tuple[Workspace, list[Sent]]]:
    """The example project; every message of every campaign (variants too) recorded as sent to
    a contact who consented to its list, with the bytes that went to SMTP."""
    project = tmp_path / "example"
    project.mkdir()
    shutil.copy(ROOT / "settings.toml", project)
    shutil.copytree(ROOT / "templates", project / "templates")
    shutil.copytree(ROOT / "lists", project / "lists")
    settings = load_settings(project / "settings.toml", environ=environ)
    (project / ".mailer").mkdir()  # what `mailer init` would have made: a DKIM key
    assert settings.dkim is not None
    (project / ".mailer" / "dkim.key").write_bytes(generate_key(settings.dkim.algorithm)[0])
    workspace = Workspace(settings, FrozenClock(NOW))
    for name, spec in settings.lists.items():
        assert spec.file is not None
        run_import(workspace, settings.path(spec.file), name,
                   rejects_path=tmp_path / f"{name}.rejects.csv")  # fmt: skip
    sent = []
    with workspace.engine.begin() as connection:
        for campaign_name, campaign in settings.campaigns.items():
            contact_id = connection.scalar(
                select(consent_status.c.contact_id)
                .where(consent_status.c.purpose == campaign.list_name,
                       consent_status.c.status.in_(["confirmed", "granted"]))
                .order_by(consent_status.c.contact_id).limit(1)
            )  # fmt: skip
            assert contact_id is not None, f"nobody consented to {campaign.list_name}"
            contact = load_contacts(connection, [contact_id])[contact_id]
            for step in campaign.messages():
                for cycle, variant in enumerate([None, *step.variants]):
                    row_id = connection.execute(outbox.insert().values(
                        campaign=campaign_name, step=step.name, contact_id=contact_id,
                        cycle=cycle, variant=variant, status="sent", queued_at=NOW, sent_at=NOW,
                    ).returning(outbox.c.id)).scalar_one()  # fmt: skip
                    rendered = workspace.renderer.render(
                        campaign_name, step, contact, message_key(row_id), variant
                    )
                    connection.execute(outbox.update().where(outbox.c.id == row_id)
                                       .values(links=json.dumps(rendered.links)))  # fmt: skip
                    message = email.message_from_bytes(rendered.data, policy=default_policy)
                    where = f"{campaign_name} {step.name} {variant or ''}".strip()
                    sent.append(Sent(where, message))
    yield workspace, sent
    workspace.close()


def test_every_link_and_header_url_of_every_example_message_answers(
    example: tuple[Workspace, list[Sent]], serve: Serve
) -> None:
    workspace, sent = example
    assert len(sent) > 15  # every campaign of the example, not one message
    broken: list[str] = []
    one_click: list[tuple[str, str]] = []
    requested = 0
    with serve(create_app(workspace)) as base, httpx.Client(timeout=30) as client:
        for item in sent:
            html = item.message.get_body(("html",)).get_content()  # type: ignore[union-attr]
            text = item.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            urls = [("HTML", url) for url in html_links(html)]
            urls += [("text", url) for url in re.findall(r"https?://[^\s<>\"')\]]+", text)]
            urls += [("List-Unsubscribe", url) for url in header_urls(item.message)]
            for part, url in urls:
                if url.startswith("mailto:"):
                    broken.append(f"{item.where}: {part} advertises {url}: nothing reads it")
                    continue
                if not url.startswith(BASE):
                    continue  # a link left untracked on purpose (data-notrack), or an image
                answer = client.get(url.replace(BASE, base))
                requested += 1
                if answer.status_code == 404 or answer.status_code >= 500:
                    broken.append(f"{item.where}: {part} {url} answered {answer.status_code}")
                if part == "List-Unsubscribe":
                    one_click.append((item.where, url))
        # Last: the one-click POST a mailbox provider makes (RFC 8058), as the header offers it.
        for where, url in one_click:
            answer = client.post(url.replace(BASE, base),
                                 data={"List-Unsubscribe": "One-Click"})  # fmt: skip
            requested += 1
            if answer.status_code == 404 or answer.status_code >= 500:
                broken.append(f"{where}: one-click POST {url} answered {answer.status_code}")
    assert broken == [], "\n".join(broken)
    assert requested > 4 * len(sent)  # pixel, clicks, unsubscribe and preference page at least
    assert {item.message["List-Unsubscribe-Post"] for item in sent} == {
        "List-Unsubscribe=One-Click"
    }
