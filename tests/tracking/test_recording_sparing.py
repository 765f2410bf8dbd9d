"""The writer's sparing reads (a message's stored clicks read only where they can change a
verdict, a `Memory` per writer) give the same events, reasons and scores as the plain
reading (every stored click in reach, no memory), over a mix of opens, refetches, people's
and machines' clicks, a honeypot and another instance's writes the writer never saw."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.render.links import HONEYPOT
from mailer.store.rollups import REFETCHES
from mailer.store.tables import contacts, event_rollups, events, outbox
from mailer.tracking.hits import Hit
from mailer.tracking.recording import Memory, record_hits
from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")  # fmt: skip
SCANNER = "Barracuda Sentinel (EE)"
# (seconds after the first open, kind, link name or None, user agent, method), batch by batch
BATCHES: list[list[tuple[float, str, str | None, str, str]]] = [
    [(-3599.5, "open", None, CHROME, "GET")],  # a sandbox, half a second after delivery
    [(0, "open", None, CHROME, "GET"), (0.5, "open", None, CHROME, "GET")],
    [(20, "open", None, CHROME, "GET"), (40, "open", None, CHROME, "GET")],
    [(45, "click", "shop", CHROME, "GET")],
    [(50, "open", None, CHROME, "GET"), (55, "open", None, CHROME, "GET")],
    [(70, "open", None, CHROME, "GET")],
    [(80, "click", "cups", CHROME, "GET"), (81, "open", None, CHROME, "GET")],
    [(130, "open", None, CHROME, "GET"), (150, "open", None, CHROME, "GET")],
    [(300, "open", None, CHROME, "GET")],
    [(330, "open", None, CHROME, "GET"), (335, "open", None, CHROME, "GET")],  # UNSEEN before
    [(600, "click", "shop", CHROME, "GET"), (600.3, "click", "cups", CHROME, "GET")],
    [(600.6, "click", "grinders", CHROME, "GET"), (601, "open", None, CHROME, "GET")],
    [(800, "open", None, "Mozilla/5.0", "GET")],  # Apple Mail Privacy Protection
    [(810, "open", None, CHROME, "HEAD")],
    [(900, "open", None, CHROME, "GET")],
    [(905, "open", None, CHROME, "GET")],
    [(960, "click", "shop", SCANNER, "GET"), (990, "open", None, CHROME, "GET")],
    [(1300, "open", None, CHROME, "GET")],
    [(1310, "open", None, CHROME, "GET"), (1320, "open", None, CHROME, "GET")],  # UNSEEN before
    [(86_400, "open", None, CHROME, "GET")],
    [(86_430, "open", None, CHROME, "GET")],
    [(86_460, "click", "shop", CHROME, "GET")],
    [(86_470, "open", None, CHROME, "GET")],
]
# Written by other instances that did not see each other's batches, before the batch at that
# position: a person's click 15 s after the honeypot, and three links clicked in one second,
# each stored as a person's (one batch holding them all would have made them a machine's).
UNSEEN = {9: [(310, "machine_click", "honeypot", "honeypot link clicked"),
              (325, "click", "shop", None)],
          18: [(1305, "click", "shop", None), (1305.2, "click", "cups", None),
               (1305.4, "click", "grinders", None)]}  # fmt: skip


@pytest.fixture
def two_sent(project: Path, environ: dict[str, str], clock: FrozenClock,
             smtp_server: ScriptedSmtpServer) -> Iterator[Workspace]:  # fmt: skip
    """Ada and Bob sent the same welcome message (three links and the honeypot)."""
    (project / "templates" / "welcome" / "1.html").write_text(
        '<p>Hello</p><p><a href="https://shop.example/beans">Shop</a> <a href='
        '"https://shop.example/cups">Cups</a> <a href="https://shop.example/grinders">Grinders'
        '</a></p><p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a>'
        "</p>"
    )
    settings = load_settings(project / "settings.toml", environ={
        **environ, "MAILER_SMTP__PORT": str(smtp_server.port),
        "MAILER_DELIVERY__RENDER_PROCESSES": "0"})  # fmt: skip
    points = {"opened": 1.0, "clicked": 5.0}
    settings = settings.model_copy(update={
        "scoring": settings.scoring.model_copy(update={"points": points})})  # fmt: skip
    workspace = Workspace(settings, clock)
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    assert deliver(workspace).sent == 2
    yield workspace
    workspace.close()


def sent_messages(workspace: Workspace) -> list[tuple[int, int, datetime, dict[str, int]]]:
    """Each message's id, contact, send time and link indexes by name."""
    names = {"https://shop.example/beans": "shop", "https://shop.example/cups": "cups",
             "https://shop.example/grinders": "grinders", HONEYPOT: "honeypot"}  # fmt: skip
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(outbox.c.id, outbox.c.contact_id, outbox.c.sent_at,
                                         outbox.c.links).order_by(outbox.c.id)).all()  # fmt: skip
    return [(row.id, row.contact_id, row.sent_at,
             {names[url]: n for n, url in enumerate(json.loads(row.links)) if url in names})
            for row in rows]  # fmt: skip


def written(workspace: Workspace, message: int) -> list[tuple[Any, ...]]:
    """The message's events stored, then its pixels fetched again (counted, not stored)."""
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(events.c.kind, events.c.properties, events.c.occurred_at)
            .where(events.c.outbox_id == message).order_by(events.c.occurred_at, events.c.id)
        ).all()  # fmt: skip
        counted = connection.execute(
            select(event_rollups.c.kind, event_rollups.c.events, event_rollups.c.last_at)
            .where(event_rollups.c.outbox_id == message).order_by(event_rollups.c.day)
        ).all()  # fmt: skip
    return [tuple(row) for row in rows] + [tuple(row) for row in counted]


def standing(workspace: Workspace, contact: int) -> tuple[Any, ...]:
    with workspace.engine.connect() as connection:
        row = connection.execute(select(contacts.c.score_epoch, contacts.c.stage)
                                 .where(contacts.c.id == contact)).one()  # fmt: skip
    return tuple(row)


def test_sparing_reads_record_what_the_plain_reading_records(two_sent: Workspace) -> None:
    workspace = two_sent
    (fast, fast_contact, sent_at, links), (plain, plain_contact, _, _) = sent_messages(workspace)
    first = sent_at + timedelta(hours=1)
    writers = [Memory(), Memory()]  # two instances' writers, taking turns
    for number, batch in enumerate(BATCHES):
        if number in UNSEEN:
            with workspace.engine.begin() as connection:
                for message, contact in ((fast, fast_contact), (plain, plain_contact)):
                    connection.execute(events.insert(), [
                        {"contact_id": contact, "kind": kind, "name": "welcome", "step": "1",
                         "occurred_at": first + timedelta(seconds=seconds), "outbox_id": message,
                         "properties": {"user_agent": CHROME, "ip": "", "link": links[link],
                                        "url": None, **({"machine": why} if why else {})}}
                        for seconds, kind, link, why in UNSEEN[number]])  # fmt: skip
        for message, memory, sparing in ((fast, writers[number % 2], True), (plain, None, False)):
            hits = [Hit(kind, f"m{message}", links[link] if link else None,  # type: ignore[arg-type]
                        first + timedelta(seconds=seconds), agent, "198.51.100.7", method)
                    for seconds, kind, link, agent, method in batch]  # fmt: skip
            with workspace.engine.begin() as connection:
                record_hits(connection, workspace.settings, workspace.key, hits, memory,
                            sparing=sparing)  # fmt: skip
            if memory is not None:
                memory.keep()
    recorded = written(workspace, fast)
    assert recorded == written(workspace, plain)
    assert standing(workspace, fast_contact) == standing(workspace, plain_contact)
    stored = [properties for kind, properties, _ in recorded if kind != REFETCHES]
    reasons = [properties.get("machine") or "" for properties in stored]
    # The mix reached what it was written for: relabelled stored hits, every rule's reasons,
    # pixels fetched again (counted).
    assert sum(bool(properties.get("was_person")) for properties in stored) >= 3
    assert any(kind == REFETCHES and n > 0 for kind, n, _ in recorded)
    for reason in ("pixel fetched 0.5 s after delivery",
                   "clicked 15 s after the honeypot link", "links clicked in the same second",
                   "a machine's click", "Apple Mail Privacy Protection", "HEAD request",
                   "link scanner (Barracuda)"):  # fmt: skip
        assert any(reason in text for text in reasons), (reason, reasons)
