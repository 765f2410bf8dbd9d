"""The corpus of request patterns (tests/tracking/corpus.py) through the real recording path,
on real SQLite and PostgreSQL, in batches of varying size: no machine's event is stored as a
person's, and people's events are people's but for those known to be lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.tables import outbox
from mailer.tracking.recording import Memory
from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.corpus import KNOWN_LOST, PATTERNS, confusion, run

TEMPLATE = (
    '<p>Hello {{ contact.first_name }}</p><p><a href="https://shop.example/beans?a=1">Shop</a> '
    '<a href="https://shop.example/cups">Cups</a> <a href="https://shop.example/grinders">'
    'Grinders</a></p><p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">'
    "Unsubscribe</a></p>"
)


@pytest.fixture
def messages(
    project: Path, environ: dict[str, str], clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> Iterator[tuple[Workspace, list[int]]]:
    """One message sent through a real SMTP server for each pattern of the corpus."""
    (project / "templates" / "welcome" / "1.html").write_text(TEMPLATE)
    settings = load_settings(project / "settings.toml", environ={
        **environ, "MAILER_SMTP__PORT": str(smtp_server.port),
        "MAILER_DELIVERY__RENDER_PROCESSES": "0"})  # fmt: skip
    workspace = Workspace(settings, clock)
    queue_welcome(
        workspace, project, *(f"reader{n}@example.com,Reader" for n in range(len(PATTERNS)))
    )
    assert deliver(workspace).sent == len(PATTERNS)
    with workspace.engine.connect() as connection:
        ids = list(connection.scalars(select(outbox.c.id).order_by(outbox.c.id)))
    yield workspace, ids
    workspace.close()


@pytest.mark.parametrize("remembering", [False, True], ids=["database", "writers-memory"])
@pytest.mark.parametrize("sizes", [[1], [4, 1, 9], [500]], ids=["one", "mixed", "all"])
def test_no_machine_is_counted_as_a_person_whatever_the_batching(
    messages: tuple[Workspace, list[int]], sizes: list[int], remembering: bool
) -> None:
    """With and without the writer process's memory of the last opens (recording.Memory)."""
    workspace, ids = messages
    outcomes = run(workspace, workspace.settings, ids, sizes, Memory() if remembering else None)
    leaked = [(o.pattern.name, o.index, o.fetch.kind) for o in outcomes
              if o.fetch.label == "machine" and o.stored == "person"]  # fmt: skip
    assert leaked == []
    lost = {(o.pattern.name, o.index): o.reason for o in outcomes
            if o.fetch.label == "person" and o.stored == "machine"}  # fmt: skip
    assert lost.keys() == KNOWN_LOST.keys(), lost
    counts = confusion(outcomes)
    assert counts[("machine", "machine")] == sum(
        fetch.label == "machine" for pattern in PATTERNS for fetch in pattern.fetches
    )
    assert counts[("person", "person")] > 20
