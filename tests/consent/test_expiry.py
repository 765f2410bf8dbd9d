"""Consent that lapses ([lists] expires_after): the engine's tick appends an `expired` entry
when the last grant and the person's last open or click are older than the bound, and neither
gate sends after it. Through the real engine and importer, the clock injected."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.consent.expiry import expire_consent
from mailer.store.tables import consent_entries, consent_evidence, consent_status, contacts, events
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET, write_csv
from tests.delivery.conftest import open_workspace  # noqa: F401
from tests.delivery.helpers import deliver, queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import run_import

TWO_YEARS_AGO = "2024-11-01"  # 752 days before NOW


@pytest.fixture
def environ(database_url: str) -> dict[str, str]:
    return {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
            "MAILER_LISTS__NEWSLETTER__EXPIRES_AFTER": "730d"}  # fmt: skip


def subscribe(workspace: Workspace, project: Path, *people: tuple[str, str]) -> None:
    """Import (email, consent date) rows into the newsletter, confirmed the next day."""
    lines = "".join(f"{email},{day},{day}\n" for email, day in people)
    write_csv(project / "news.csv", "email,consent_at,consent_confirmed_at\n" + lines)
    run_import(workspace, project / "news.csv", "newsletter")


def contact_id(workspace: Workspace, email: str) -> int:
    with workspace.engine.connect() as connection:
        return int(connection.scalar(select(contacts.c.id).where(contacts.c.email == email)))


def status(workspace: Workspace, email: str) -> str:
    with workspace.engine.connect() as connection:
        return str(connection.scalar(
            select(consent_status.c.status).where(
                consent_status.c.contact_id == contact_id(workspace, email),
                consent_status.c.purpose == "newsletter"))
        )  # fmt: skip


def expiries(workspace: Workspace) -> list[dict[str, Any]]:
    """The `expired` entries, with their evidence, in ledger order."""
    with workspace.engine.connect() as connection:
        found = connection.execute(
            select(consent_entries, contacts.c.email, consent_evidence.c.data)
            .join(contacts, contacts.c.id == consent_entries.c.contact_id)
            .join(consent_evidence, consent_evidence.c.entry_id == consent_entries.c.id)
            .where(consent_entries.c.action == "expired")
            .order_by(consent_entries.c.id)
        )  # fmt: skip
        return [dict(row._mapping) | {"evidence": json.loads(row.data)} for row in found]


def record_event(workspace: Workspace, email: str, kind: str, at: datetime) -> None:
    """An open or click of the welcome message, as the tracking endpoint records it."""
    who = contact_id(workspace, email)
    with workspace.engine.begin() as connection:
        connection.execute(events.insert().values(
            contact_id=who, kind=kind, name="welcome", step="hello",
            properties={}, occurred_at=at))  # fmt: skip


def verifies(project: Path, environ: dict[str, str]) -> bool:
    result = CliRunner().invoke(
        cli, ["--config", str(project / "settings.toml"), "consent", "verify"], env=environ
    )
    assert result.exit_code in (0, 1), result.output
    return result.exit_code == 0


def test_consent_two_years_old_expires_at_the_tick_and_nothing_is_queued(
    workspace: Workspace, project: Path, environ: dict[str, str]
) -> None:
    subscribe(workspace, project, ("ada@example.com", TWO_YEARS_AGO),
              ("bob@example.com", "2026-01-01"))  # fmt: skip
    report = tick(workspace.engine, workspace.settings, NOW)
    assert (report.queued, report.expired) == (1, 1)  # Bob only is queued; Ada's consent lapsed
    [expired] = expiries(workspace)
    assert (expired["email"], expired["purpose"], expired["source"], expired["occurred_at"]) == (
        "ada@example.com", "newsletter", "scheduler", NOW)  # fmt: skip
    assert expired["evidence"] == {
        "at": NOW.isoformat(), "via": "expiry", "rule": "expires_after 730d",
        "last_grant": "2024-11-01T00:00:00+00:00", "last_activity": "none",
    }  # fmt: skip
    assert status(workspace, "ada@example.com") == "none"
    assert status(workspace, "bob@example.com") == "confirmed"
    # A second tick, or a second process's pass, writes nothing more.
    assert tick(workspace.engine, workspace.settings, NOW + timedelta(minutes=1)).expired == 0
    with workspace.engine.begin() as connection:
        assert expire_consent(connection, workspace.settings, NOW + timedelta(minutes=2)) == 0
    assert len(expiries(workspace)) == 1
    assert verifies(project, environ)  # the replayed ledger says `none` too


def test_a_click_within_the_window_keeps_consent_a_machine_click_does_not(
    workspace: Workspace, project: Path
) -> None:
    subscribe(workspace, project, ("ada@example.com", TWO_YEARS_AGO),
              ("bob@example.com", TWO_YEARS_AGO))  # fmt: skip
    record_event(workspace, "ada@example.com", "click", NOW - timedelta(days=30))
    record_event(workspace, "bob@example.com", "machine_click", NOW - timedelta(days=30))
    record_event(workspace, "bob@example.com", "open", NOW - timedelta(days=740))
    report = tick(workspace.engine, workspace.settings, NOW)
    assert report.queued == 1  # Ada
    [expired] = expiries(workspace)
    assert expired["email"] == "bob@example.com"
    assert expired["evidence"]["last_activity"] == (NOW - timedelta(days=740)).isoformat()
    assert status(workspace, "ada@example.com") == "confirmed"
    # Ada's click holds her consent 730 days from the click, not from the grant.
    tick(workspace.engine, workspace.settings, NOW + timedelta(days=699))
    assert status(workspace, "ada@example.com") == "confirmed"
    tick(workspace.engine, workspace.settings, NOW + timedelta(days=701))
    assert status(workspace, "ada@example.com") == "none"


def test_a_grant_after_expiry_counts_from_the_new_grant(
    workspace: Workspace, project: Path, environ: dict[str, str]
) -> None:
    subscribe(workspace, project, ("ada@example.com", TWO_YEARS_AGO))
    tick(workspace.engine, workspace.settings, NOW)
    assert status(workspace, "ada@example.com") == "none"
    subscribe(workspace, project, ("ada@example.com", "2026-11-20"))  # she signed up again
    assert status(workspace, "ada@example.com") == "confirmed"
    tick(workspace.engine, workspace.settings, NOW + timedelta(hours=1))
    tick(workspace.engine, workspace.settings, NOW + timedelta(days=720))
    assert status(workspace, "ada@example.com") == "confirmed"
    assert len(expiries(workspace)) == 1
    tick(workspace.engine, workspace.settings, NOW + timedelta(days=731))
    _, second = expiries(workspace)
    assert second["evidence"]["last_grant"] == "2026-11-20T00:00:00+00:00"
    assert status(workspace, "ada@example.com") == "none"
    assert verifies(project, environ)


def test_consent_expired_between_queue_and_send_is_not_sent(
    open_workspace: Any,  # noqa: F811
    project: Path,
    smtp_server: ScriptedSmtpServer,
) -> None:
    queue_welcome(open_workspace(LISTS__NEWSLETTER__EXPIRES_AFTER="730d"), project,
                  "ada@example.com,Ada")  # fmt: skip
    # The list's bound is shortened: consent given on 2026-01-01 has lapsed by NOW.
    workspace = open_workspace(LISTS__NEWSLETTER__EXPIRES_AFTER="300d")
    tick(workspace.engine, workspace.settings, NOW)
    report = deliver(workspace)
    assert (report.sent, report.skipped) == (0, 1)
    assert rows(workspace)["ada@example.com"]["reason"] == "at sending: no consent (none)"
    assert smtp_server.received == []


def test_two_processes_expiring_at_once_append_one_entry(
    workspace: Workspace, project: Path, environ: dict[str, str]
) -> None:
    """Two `mailer run` ticks reach the expiry at the same instant (on their own connections,
    started together by a barrier): the ledger's lock makes the second find nothing left."""
    subscribe(workspace, project, ("ada@example.com", TWO_YEARS_AGO),
              ("bob@example.com", TWO_YEARS_AGO))  # fmt: skip
    together, counts = threading.Barrier(2), []

    def expire() -> None:
        together.wait()
        with workspace.engine.begin() as connection:
            counts.append(expire_consent(connection, workspace.settings, NOW))

    threads = [threading.Thread(target=expire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(counts) == [0, 2]
    assert sorted(entry["email"] for entry in expiries(workspace)) == [
        "ada@example.com", "bob@example.com"]  # fmt: skip
    assert verifies(project, environ)
