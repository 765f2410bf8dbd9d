"""`mailer bounces ingest` from the command line: .eml files, mbox files and Maildirs, one JSON
object per message with exactly the issue's keys, the effect applied once, and --dry-run
changing nothing. Real database; the fixtures' tokens name outbox rows 1 to 3."""

from __future__ import annotations

import json
import mailbox
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from mailer.cli import cli
from mailer.store.tables import consent_entries, contacts, outbox, suppressions
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET
from tests.helpers import count

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = [
    "file", "classification", "recipient", "status_code", "verp_token",
    "original_message_id", "feedback_type", "action_taken",
]  # fmt: skip


@pytest.fixture
def ingest(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Runs `mailer bounces ingest ARGS --json` in the project; the objects it printed."""
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL", "MAILER_NOW"):
        monkeypatch.delenv(variable, raising=False)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
                   "MAILER_NOW": NOW.isoformat()}  # fmt: skip

    def run(*args: str) -> list[dict[str, Any]]:
        result = CliRunner().invoke(cli, ["bounces", "ingest", *args, "--json"],
                                    env=environment, catch_exceptions=False)  # fmt: skip
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.output.splitlines()]

    return run


@pytest.fixture
def sent(workspace: Workspace) -> dict[str, int]:
    """Ada, Bob and Cy were each sent one message (outbox 1, 2, 3), as the fixtures say."""
    ids = {}
    with workspace.engine.begin() as connection:
        for number, (email, step) in enumerate(
            [
                ("ada@example.com", "hello"),
                ("bob@example.org", "tips"),
                ("cy@example.net", "hello"),
            ],
            start=1,
        ):
            contact = connection.execute(insert(contacts).values(
                email=email, attributes={}, created_at=NOW, updated_at=NOW,
            )).inserted_primary_key[0]  # fmt: skip
            tag = ("0a1b2c3d4e5f", "1b2c3d4e5f60", "2c3d4e5f6071")[number - 1]
            ids[email] = connection.execute(insert(outbox).values(
                campaign="welcome", step=step, contact_id=contact, cycle=0, status="sent",
                queued_at=NOW - timedelta(hours=1), sent_at=NOW - timedelta(minutes=30),
                message_id=f"<m{number}.{tag}@acme.example>", attempts=1,
            )).inserted_primary_key[0]  # fmt: skip
    assert list(ids.values()) == [1, 2, 3]  # the fixtures' tokens name these rows
    return ids


def test_one_file_prints_one_object_with_exactly_the_issue_keys(ingest: Any) -> None:
    [row] = ingest(str(FIXTURES / "postfix_user_unknown.eml"), "--dry-run")
    assert list(row) == KEYS
    assert row == {
        "file": str(FIXTURES / "postfix_user_unknown.eml"), "classification": "hard",
        "recipient": "ada@example.com", "status_code": "5.1.1",
        "verp_token": row["verp_token"], "original_message_id": "m1.0a1b2c3d4e5f@acme.example",
        "feedback_type": None, "action_taken": "none (dry run)",
    }  # fmt: skip
    assert row["verp_token"].startswith("1.")


def test_a_folder_of_files_reads_every_fixture_in_name_order(ingest: Any) -> None:
    rows = ingest(str(FIXTURES), "--dry-run")
    names = sorted(path.name for path in FIXTURES.glob("*.eml"))
    assert [Path(row["file"]).name for row in rows] == names
    kinds = {Path(row["file"]).name: row["classification"] for row in rows}
    assert kinds["arf_redacted.eml"] == "complaint" and kinds["junk.eml"] == "unparseable"


def test_an_mbox_file_yields_each_message(ingest: Any, tmp_path: Path) -> None:
    names = ["qmail_no_mailbox.eml", "arf_yahoo_cfl.eml", "sendmail_delay_warning.eml"]
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    for name in names:
        box.add((FIXTURES / name).read_bytes())
    box.close()
    rows = ingest(str(tmp_path / "bounces.mbox"), "--dry-run")
    assert [row["file"] for row in rows] == [f"{tmp_path / 'bounces.mbox'}#{n}" for n in (1, 2, 3)]
    assert [(row["classification"], row["recipient"]) for row in rows] == [
        ("hard", "fay@example.net"), ("complaint", "kim@example.net"),
        ("delayed", "gus@example.com"),
    ]  # fmt: skip
    assert rows[1]["feedback_type"] == "abuse"


def test_a_maildir_yields_each_message(ingest: Any, tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir")
    for name in ("yahoo_no_account.eml", "auto_reply_rfc3834.eml"):
        box.add((FIXTURES / name).read_bytes())
    rows = ingest(str(tmp_path / "Maildir"), "--dry-run")
    assert sorted((row["classification"], row["recipient"]) for row in rows) == [
        ("hard", "eve@example.net"), ("not_bounce", None),
    ]  # fmt: skip
    assert all(row["file"].startswith(f"{tmp_path / 'Maildir'}:") for row in rows)


def entries(workspace: Workspace) -> int:
    return count(workspace, consent_entries)


def test_dry_run_changes_nothing_then_ingest_suppresses_once(
    ingest: Any, workspace: Workspace, sent: dict[str, int]
) -> None:
    hard = str(FIXTURES / "postfix_user_unknown.eml")
    before = entries(workspace)
    [row] = ingest(hard, "--dry-run")
    assert row["action_taken"] == "none (dry run)"
    assert count(workspace, suppressions) == 0 and entries(workspace) == before

    [row] = ingest(hard)
    assert row["action_taken"] == "suppressed (hard bounce)"
    with workspace.engine.connect() as connection:
        assert connection.scalar(select(suppressions.c.reason)) == "hard_bounce"
    after = entries(workspace)

    [again] = ingest(hard)  # the same report twice changes nothing twice
    assert again["action_taken"] != "suppressed (hard bounce)"
    assert count(workspace, suppressions) == 1 and entries(workspace) == after


def test_delays_auto_replies_and_junk_change_nothing(
    ingest: Any, workspace: Workspace, sent: dict[str, int]
) -> None:
    names = ["sendmail_delay_warning.eml", "auto_reply_rfc3834.eml", "junk.eml",
             "success_dsn_relayed.eml", "gmail_policy_block.eml"]  # fmt: skip
    rows = ingest(*(str(FIXTURES / name) for name in names))
    assert [row["classification"] for row in rows] == [
        "delayed", "not_bounce", "unparseable", "not_bounce", "soft",
    ]  # fmt: skip
    assert all(row["action_taken"].startswith("none") for row in rows[:4])
    assert count(workspace, suppressions) == 0


def test_a_complaint_suppresses_the_complainer_matched_by_token(
    ingest: Any, workspace: Workspace, sent: dict[str, int]
) -> None:
    """The Microsoft-style report's token names Ada's message; the address comes from it."""
    [row] = ingest(str(FIXTURES / "arf_microsoft_jmrp.eml"))
    assert row["classification"] == "complaint"
    assert row["action_taken"] == "complaint: withdrawn from every list and suppressed"
    with workspace.engine.connect() as connection:
        assert connection.execute(select(suppressions.c.reason)).scalars().all() == ["complained"]


def test_a_path_that_does_not_exist_is_a_usage_error(ingest: Any, project: Path) -> None:
    result = CliRunner().invoke(cli, ["bounces", "ingest", str(project / "nope.mbox")])
    assert result.exit_code == 2 and "does not exist" in result.output
