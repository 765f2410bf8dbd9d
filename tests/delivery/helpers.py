"""Helpers of the delivery tests: queue messages through the engine, read the outbox, and
deliver with a moved clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from mailer.campaigns.engine import tick
from mailer.delivery.worker import Deliverer, DeliveryReport
from mailer.store.tables import contacts, outbox
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.helpers import run_import


def queue_welcome(workspace: Workspace, project: Path, *people: str) -> None:
    """Import `people` ("email" or "email,First") as confirmed subscribers, then tick: the
    welcome sequence queues its first message to each."""
    rows = [person if "," in person else f"{person}," for person in people]
    write_csv(project / "news.csv", "email,first_name,consent_at,consent_confirmed_at\n"
              + "".join(f"{row},2026-01-01,2026-01-02\n" for row in rows))  # fmt: skip
    run_import(workspace, project / "news.csv", "newsletter")
    assert tick(workspace.engine, workspace.settings, NOW).queued == len(people)


def rows(workspace: Workspace) -> dict[str, dict[str, object]]:
    """The outbox by recipient address."""
    with workspace.engine.connect() as connection:
        found = connection.execute(
            select(contacts.c.email, outbox).join(contacts, contacts.c.id == outbox.c.contact_id)
        )
        return {row.email: dict(row._mapping) for row in found}


def deliver(workspace: Workspace, after: timedelta = timedelta(0)) -> DeliveryReport:
    deliverer = Deliverer(workspace)
    try:
        return deliverer.deliver(NOW + after)
    finally:
        deliverer.close()
