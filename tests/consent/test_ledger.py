from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, text, update

from mailer.consent.ledger import entry_hash, verify
from mailer.consent.person import erase_person, withdraw
from mailer.store.tables import consent_entries
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import run_import


def ledger_with_entries(workspace: Workspace, tmp_path: Path) -> None:
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


def check(workspace: Workspace) -> tuple[int, str | None]:
    with workspace.engine.connect() as connection:
        result = verify(connection)
    return result.entries, result.problem


def tamper(workspace: Workspace, sql: str) -> None:
    with workspace.engine.begin() as connection:
        connection.execute(text(sql))


def test_an_untouched_ledger_verifies(workspace: Workspace, tmp_path: Path) -> None:
    assert check(workspace) == (0, None)
    ledger_with_entries(workspace, tmp_path)
    assert check(workspace) == (4, None)


def test_an_edited_entry_is_caught_and_named(workspace: Workspace, tmp_path: Path) -> None:
    ledger_with_entries(workspace, tmp_path)
    tamper(workspace, "UPDATE consent_entries SET action = 'confirmed' WHERE id = 2")
    assert check(workspace) == (1, "entry 2 was altered: its contents no longer match its hash")


def test_a_rewritten_entry_with_a_recomputed_public_hash_is_caught_at_that_entry(
    workspace: Workspace, tmp_path: Path
) -> None:
    ledger_with_entries(workspace, tmp_path)
    # An attacker who knows the algorithm, but not the key, edits entry 2 and rehashes it.
    with workspace.engine.begin() as connection:
        connection.execute(
            update(consent_entries).where(consent_entries.c.id == 2).values(action="confirmed")
        )
        row = connection.execute(select(consent_entries).where(consent_entries.c.id == 2)).one()
        connection.execute(
            update(consent_entries)
            .where(consent_entries.c.id == 2)
            .values(entry_hash=entry_hash(row))
        )
    assert check(workspace) == (1, "entry 2 was altered: its contents no longer match its hash")


def test_a_deleted_entry_is_caught(workspace: Workspace, tmp_path: Path) -> None:
    ledger_with_entries(workspace, tmp_path)
    tamper(workspace, "DELETE FROM consent_evidence WHERE entry_id = 2")
    tamper(workspace, "DELETE FROM consent_status WHERE entry_id = 2")
    tamper(workspace, "DELETE FROM consent_entries WHERE id = 2")
    assert check(workspace) == (
        1, "entry 2 was deleted: the ledger jumps from entry 1 to entry 3"
    )  # fmt: skip


def test_deleting_the_newest_entries_is_caught(workspace: Workspace, tmp_path: Path) -> None:
    ledger_with_entries(workspace, tmp_path)
    tamper(workspace, "DELETE FROM consent_status WHERE entry_id = 4")
    tamper(workspace, "DELETE FROM consent_evidence WHERE entry_id = 4")
    tamper(workspace, "DELETE FROM consent_entries WHERE id = 4")
    assert check(workspace)[1] == (
        "entries 4..4 were deleted: the ledger head records 4 entries but only 3 remain"
    )


def test_an_inserted_entry_is_caught(workspace: Workspace, tmp_path: Path) -> None:
    ledger_with_entries(workspace, tmp_path)
    tamper(
        workspace,
        """
        INSERT INTO consent_entries (id, subject_hash, purpose, action, source, occurred_at,
            recorded_at, prev_hash, entry_hash)
        SELECT 5, subject_hash, 'newsletter', 'confirmed', 'admin', occurred_at, recorded_at,
            entry_hash, entry_hash FROM consent_entries WHERE id = 4
    """,
    )
    assert check(workspace)[1] == "entry 5 was altered: its contents no longer match its hash"


def test_edited_or_deleted_evidence_is_caught(workspace: Workspace, tmp_path: Path) -> None:
    ledger_with_entries(workspace, tmp_path)
    tamper(
        workspace,
        """UPDATE consent_evidence SET data = '{"ip": "10.0.0.1"}'
                         WHERE entry_id = 3""",
    )
    assert check(workspace)[1] == "the evidence of entry 3 was altered"
    tamper(workspace, "DELETE FROM consent_evidence WHERE entry_id = 3")
    assert check(workspace)[1] == (
        "the evidence of entry 3 was deleted, but its subject was never erased"
    )


def test_the_chain_still_verifies_after_erasure_and_withdrawal(
    workspace: Workspace, tmp_path: Path
) -> None:
    ledger_with_entries(workspace, tmp_path)
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "cy@example.com", workspace.double_opt_in,
                 workspace.clock.now(), list_name="leads")  # fmt: skip
        workspace.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
        erase_person(connection, workspace.key, "bob@example.com", workspace.clock.now())
    assert check(workspace) == (6, None)


def test_the_entry_hash_is_sha256_of_the_documented_json_array() -> None:
    row = {
        "id": 7, "subject_hash": "ab" * 32, "purpose": "newsletter", "action": "granted",
        "source": "import", "occurred_at": datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        "recorded_at": datetime(2026, 11, 23, 10, 0, 0, 5, tzinfo=UTC),
        "evidence_digest": None, "prev_hash": "0" * 64,
    }  # fmt: skip
    for digest in (None, "cd" * 32):
        row["evidence_digest"] = digest
        fields = [7, "ab" * 32, "newsletter", "granted", "import",
                  "2026-03-01T09:30:00.000000+00:00", "2026-11-23T10:00:00.000005+00:00",
                  digest, "0" * 64]  # fmt: skip
        expected = json.dumps(fields, separators=(",", ":"))
        assert entry_hash(row) == hashlib.sha256(expected.encode()).hexdigest()
