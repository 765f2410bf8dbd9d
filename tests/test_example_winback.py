"""The shipped win-back sequence waits for 90 days of mail nobody read: importing the list
enrols nobody, however long ago people signed up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.tables import contacts, enrollments, events, outbox
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.helpers import run_import

ROOT = Path(__file__).resolve().parent.parent
MONTHLY = [1, 30, 60, 90]  # days after the import: a monthly newsletter, sent by the relay


@pytest.fixture
def example(environ: dict[str, str], tmp_path: Path) -> Iterator[Workspace]:
    """The example settings, the engine started, then lists/newsletter.csv imported."""
    workspace = Workspace(load_settings(ROOT / "settings.toml", environ=environ), FrozenClock(NOW))
    tick(workspace.engine, workspace.settings, NOW)
    run_import(workspace, ROOT / "lists/newsletter.csv", "newsletter",
               rejects_path=tmp_path / "rejects.csv")  # fmt: skip
    yield workspace
    workspace.close()


def won_back(workspace: Workspace, days: int) -> set[str]:
    """Tick `days` after the import; who is in the reengagement sequence then."""
    tick(workspace.engine, workspace.settings, NOW + timedelta(days=days))
    query = (select(contacts.c.email).join(enrollments, enrollments.c.contact_id == contacts.c.id)
             .where(enrollments.c.campaign == "reengagement"))  # fmt: skip
    with workspace.engine.connect() as connection:
        return {email.split("@")[0] for email in connection.scalars(query)}


def test_importing_the_list_enrols_nobody_in_the_win_back(example: Workspace) -> None:
    # Nine of the twelve signed up more than 90 days ago; none has been mailed yet.
    assert won_back(example, 0) == set()
    assert won_back(example, 1) == set()


def test_ninety_days_of_unread_mail_starts_the_win_back(example: Workspace) -> None:
    with example.engine.begin() as connection:
        ids = {row.email.split("@")[0]: row.id
               for row in connection.execute(select(contacts.c.email, contacts.c.id))}  # fmt: skip
        connection.execute(insert(outbox), [
            {"campaign": "monthly", "step": f"day-{day}", "contact_id": ids[name], "cycle": 0,
             "status": "sent", "queued_at": NOW + timedelta(days=day),
             "sent_at": NOW + timedelta(days=day)}
            for name in ("priya.nair", "maria.santos", "emma.larsen") for day in MONTHLY
        ])  # fmt: skip
        connection.execute(insert(events), [
            {"contact_id": ids["maria.santos"], "kind": "click", "name": "monthly",
             "step": "day-60", "properties": {}, "occurred_at": NOW + timedelta(days=70)},
            # Apple's proxy fetched Emma's pixel: no sign that she read anything.
            {"contact_id": ids["emma.larsen"], "kind": "machine_open", "name": "monthly",
             "step": "day-90", "properties": {"machine": "Apple Mail Privacy Protection"},
             "occurred_at": NOW + timedelta(days=90)},
        ])  # fmt: skip
    assert won_back(example, 80) == set()  # mailed for 79 days only: too early to tell
    # Priya and Emma read nothing of 90 days of mail; Maria clicked; the rest were not mailed.
    assert won_back(example, 100) == {"priya.nair", "emma.larsen"}
