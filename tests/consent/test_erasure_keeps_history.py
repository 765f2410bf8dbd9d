"""Erasing a person (GDPR Art. 17) deletes their personal data but not the history the sender
must keep: their sent messages stay, pseudonymised, each with the ledger entry that allowed it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, inspect, select, text

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.consent.ledger import verify
from mailer.consent.person import consent_history, erase_person
from mailer.store.tables import events, outbox
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.conftest import at

Serve = Callable[..., AbstractContextManager[str]]


def sent_count(workspace: Workspace) -> int:
    with workspace.engine.connect() as connection:
        return int(connection.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.status == "sent")
        ) or 0)  # fmt: skip


@pytest.fixture
def relayed(project: Path, environ: dict[str, str], clock: FrozenClock,
            smtp_server: ScriptedSmtpServer) -> Iterator[Workspace]:  # fmt: skip
    """A workspace that delivers through the test's SMTP server."""
    settings = load_settings(project / "settings.toml", environ={
        **environ, "MAILER_SMTP__PORT": str(smtp_server.port),
        "MAILER_DELIVERY__RENDER_PROCESSES": "0"})  # fmt: skip
    workspace = Workspace(settings, clock)
    yield workspace
    workspace.close()


def test_sent_messages_survive_erasure_pseudonymised_with_their_ledger_entry(
    relayed: Workspace, project: Path
) -> None:
    workspace = relayed
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    assert deliver(workspace).sent == 2
    with workspace.engine.connect() as connection:
        before = connection.execute(select(outbox).order_by(outbox.c.id)).all()
    assert sent_count(workspace) == 2
    with workspace.engine.begin() as connection:
        erased = erase_person(connection, workspace.key, "ada@example.com",
                              workspace.clock.now(), reference="DSR-2026-17")  # fmt: skip
    assert sent_count(workspace) == 2  # the campaign's history does not shrink
    with workspace.engine.connect() as connection:
        after = {row.id: row for row in connection.execute(select(outbox))}
        history = consent_history(connection, workspace.key, "ada@example.com")
        assert verify(connection).intact
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                dumped = json.dumps([str(value) for value in row]).lower()
                assert "ada@example.com" not in dumped and "ada" not in dumped.split('"'), table
    ada = next(row for row in before if row.contact_id != after[row.id].contact_id)
    kept = after[ada.id]
    assert kept.contact_id is None and kept.links is None and kept.reply is None
    assert (kept.campaign, kept.step, kept.variant, kept.status, kept.sent_at, kept.message_id,
            kept.consent_entry_id) == (ada.campaign, ada.step, ada.variant, "sent", ada.sent_at,
                                       ada.message_id, ada.consent_entry_id)  # fmt: skip
    assert kept.consent_entry_id is not None
    assert [entry["entry_id"] for entry in history].count(kept.consent_entry_id) == 1
    assert history[-1]["entry_id"] == erased and history[-1]["action"] == "erased"
    assert history[-1]["evidence"] == {"reference": "DSR-2026-17"}


def test_a_message_not_yet_sent_is_skipped_and_kept(workspace: Workspace, project: Path) -> None:
    queue_welcome(workspace, project, "ada@example.com,Ada")
    with workspace.engine.begin() as connection:
        erase_person(connection, workspace.key, "ada@example.com", workspace.clock.now())
    with workspace.engine.connect() as connection:
        row = connection.execute(select(outbox)).one()
    assert (row.status, row.reason, row.contact_id) == ("skipped", "the contact was erased", None)


def test_an_erased_persons_old_message_still_answers_and_records_nothing(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    with workspace.engine.begin() as connection:
        erase_person(connection, workspace.key, "ada@example.com", workspace.clock.now())
    with serve(create_app(workspace)) as base:
        pixel = httpx.get(at(base, urls["open"]))
        click = httpx.get(at(base, urls["shop"]))
        page = httpx.get(at(base, urls["unsubscribe"]))
        health = httpx.get(f"{base}/healthz")
    # The click targets went with the person (a query string may have named them).
    assert pixel.status_code == 200 and click.status_code == 404 and page.status_code == 404
    assert health.status_code == 200, health.text  # the buffer flushed without an error
    with workspace.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(events)) == 0
