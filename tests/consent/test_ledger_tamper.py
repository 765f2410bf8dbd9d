"""An insider with write access to the database, but not the secret key, edits it with raw SQL:
`mailer consent verify` must catch every edit, name it, and exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, text, update

from mailer.cli import cli
from mailer.consent.ledger import GENESIS_HASH, entry_hash
from mailer.consent.person import withdraw
from mailer.store.tables import consent_entries, ledger_head
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import run_import


@pytest.fixture
def ledger(workspace: Workspace, tmp_path: Path) -> Workspace:
    """Four leads granted (entries 1-4), cy withdrawn from leads (5), dee withdrawn from
    everything and suppressed (6 and 7)."""
    path = write_csv(
        tmp_path / "leads.csv",
        """
        email,consent_at,consent_ip
        ada@example.com,2026-03-01,203.0.113.1
        bob@example.com,2026-03-02,203.0.113.2
        cy@example.com,2026-03-03,203.0.113.3
        dee@example.com,2026-03-04,203.0.113.4
    """,
    )
    run_import(workspace, path, "leads")
    with workspace.engine.begin() as connection:
        withdraw(
            connection,
            workspace.key,
            "cy@example.com",
            workspace.double_opt_in,
            workspace.clock.now(),
            list_name="leads",
        )
        withdraw(
            connection,
            workspace.key,
            "dee@example.com",
            workspace.double_opt_in,
            workspace.clock.now(),
        )
    return workspace


def mailer(project: Path, environ: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(project / "settings.toml"), *args], env=environ)


def tamper(workspace: Workspace, *statements: str) -> None:
    with workspace.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def contact_id(workspace: Workspace, email: str) -> int:
    with workspace.engine.connect() as connection:
        found = connection.scalar(text("SELECT id FROM contacts WHERE email = :e"), {"e": email})
    return int(found)


def assert_caught(project: Path, environ: dict[str, str], *expected: str) -> str:
    result = mailer(project, environ, "consent", "verify")
    assert result.exit_code == 1, result.output
    for words in expected:
        assert words in result.output
    return result.output


def test_the_untampered_ledger_verifies(
    ledger: Workspace, project: Path, environ: dict[str, str]
) -> None:
    result = mailer(project, environ, "consent", "verify")
    assert result.exit_code == 0, result.output
    assert "7 entries" in result.output


def test_deleting_the_last_entry_and_moving_the_head_back_is_caught(
    ledger: Workspace, project: Path, environ: dict[str, str]
) -> None:
    tamper(
        ledger,
        "DELETE FROM consent_evidence WHERE entry_id = 7",
        "DELETE FROM suppressions WHERE entry_id = 7",
        "DELETE FROM consent_entries WHERE id = 7",
        "UPDATE ledger_head SET last_id = 6, "
        "last_hash = (SELECT entry_hash FROM consent_entries WHERE id = 6)",
    )
    assert_caught(project, environ, "ledger head")


def test_a_withdrawal_rewritten_as_a_grant_with_every_hash_recomputed_is_caught(
    ledger: Workspace, project: Path, environ: dict[str, str]
) -> None:
    cy = contact_id(ledger, "cy@example.com")
    with ledger.engine.begin() as connection:
        connection.execute(
            update(consent_entries).where(consent_entries.c.id == 5).values(action="granted")
        )
        connection.execute(
            text(
                "UPDATE consent_status SET status = 'granted' "
                f"WHERE contact_id = {cy} AND purpose = 'leads'"
            )
        )
        previous = connection.scalar(
            select(consent_entries.c.entry_hash).where(consent_entries.c.id == 4)
        )
        for row in connection.execute(
            select(consent_entries).where(consent_entries.c.id >= 5).order_by(consent_entries.c.id)
        ).all():
            fields: dict[str, Any] = {**row._mapping, "prev_hash": previous}
            previous = entry_hash(fields)  # the public, unkeyed hash function
            connection.execute(
                update(consent_entries)
                .where(consent_entries.c.id == row.id)
                .values(prev_hash=fields["prev_hash"], entry_hash=previous)
            )
        connection.execute(update(ledger_head).values(last_hash=previous))
    assert_caught(project, environ, "entry 5")


def test_a_status_edited_behind_the_ledger_is_named(
    ledger: Workspace, project: Path, environ: dict[str, str]
) -> None:
    cy = contact_id(ledger, "cy@example.com")
    tamper(
        ledger,
        "UPDATE consent_status SET status = 'granted' "
        f"WHERE contact_id = {cy} AND purpose = 'leads'",
    )
    assert_caught(
        project, environ, "consent_status", f"contact {cy}", "leads", "withdrawn", "granted"
    )


def test_a_deleted_suppression_is_named(
    ledger: Workspace, project: Path, environ: dict[str, str]
) -> None:
    tamper(ledger, "DELETE FROM suppressions")
    assert_caught(project, environ, "suppressions", "missing")


def test_a_suppression_whose_address_was_blanked_is_named(
    ledger: Workspace, project: Path, environ: dict[str, str]
) -> None:
    # Both gates find a suppression by the contact's address: without it, dee would be mailed.
    tamper(ledger, "UPDATE suppressions SET email = NULL")
    assert_caught(project, environ, "suppressions", "address")


def test_an_entry_moved_to_another_contact_is_caught(
    ledger: Workspace, project: Path, environ: dict[str, str]
) -> None:
    bob = contact_id(ledger, "bob@example.com")
    tamper(ledger, f"UPDATE consent_entries SET contact_id = {bob} WHERE id = 1")
    assert_caught(project, environ, "entry 1", f"contact {bob}")


def test_a_checkpoint_proves_nothing_was_truncated_or_rolled_back(
    ledger: Workspace, project: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    with ledger.engine.connect() as connection:
        head_at_6 = connection.execute(select(ledger_head)).one()._mapping
    saved = tmp_path / "checkpoint.json"
    made = mailer(project, environ, "consent", "checkpoint", "--out", str(saved))
    assert made.exit_code == 0, made.output
    checkpoint = json.loads(saved.read_text())
    assert checkpoint["entries"] == 7 and len(checkpoint["signature"]) > 40
    kept = mailer(project, environ, "consent", "verify", "--checkpoint", str(saved))
    assert kept.exit_code == 0, kept.output
    # A rollback: the last entry goes and the head the database held before it comes back.
    tamper(
        ledger,
        "DELETE FROM consent_evidence WHERE entry_id = 7",
        "DELETE FROM suppressions WHERE entry_id = 7",
        "DELETE FROM consent_entries WHERE id = 7",
    )
    with ledger.engine.begin() as connection:
        connection.execute(update(ledger_head).values(**head_at_6))
    rolled_back = mailer(project, environ, "consent", "verify", "--checkpoint", str(saved))
    assert rolled_back.exit_code == 1
    assert "7 entries" in rolled_back.output and "6 remain" in rolled_back.output


def test_a_checkpoint_catches_a_rewrite_before_it(
    ledger: Workspace, project: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    saved = tmp_path / "checkpoint.json"
    assert mailer(project, environ, "consent", "checkpoint", "--out", str(saved)).exit_code == 0
    tamper(ledger, f"UPDATE consent_entries SET entry_hash = '{GENESIS_HASH}' WHERE id = 7")
    result = mailer(project, environ, "consent", "verify", "--checkpoint", str(saved))
    assert result.exit_code == 1 and "checkpoint" in result.output


def test_a_forged_checkpoint_is_refused(
    ledger: Workspace, project: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    saved = tmp_path / "checkpoint.json"
    assert mailer(project, environ, "consent", "checkpoint", "--out", str(saved)).exit_code == 0
    checkpoint = json.loads(saved.read_text())
    checkpoint["entries"] = 3  # claims the ledger was shorter, to excuse a truncation
    saved.write_text(json.dumps(checkpoint))
    result = mailer(project, environ, "consent", "verify", "--checkpoint", str(saved))
    assert result.exit_code == 1 and "signature" in result.output
