"""Every change of consent carries its evidence: the message and campaign a request came
through, when, the truncated IP and the user agent; an operator's reason and ticket number."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, insert, select

from mailer.cli import cli
from mailer.consent.evidence import SentMessage, complaint_evidence, truncated_ip
from mailer.consent.person import consent_history
from mailer.contacts.addresses import address_hash
from mailer.store.tables import outbox, suppressions
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.conftest import SECRET, write_csv
from tests.helpers import run_import
from tests.tracking.conftest import at

Serve = Callable[..., AbstractContextManager[str]]
AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def withdrawals(workspace: Workspace) -> list[dict[str, Any]]:
    with workspace.engine.connect() as connection:
        history = consent_history(connection, workspace.key, "ada@example.com")
    return [entry for entry in history if entry["action"] == "withdrawn"]


def the_message(workspace: Workspace) -> tuple[int, str, str]:
    with workspace.engine.connect() as connection:
        row = connection.execute(select(outbox.c.id, outbox.c.campaign, outbox.c.step)).one()
    return row.id, row.campaign, row.step


def test_a_one_click_unsubscribe_records_message_campaign_time_ip_prefix_and_agent(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        answer = httpx.post(at(base, urls["unsubscribe"]), data={"List-Unsubscribe": "One-Click"},
                            headers={"User-Agent": AGENT})  # fmt: skip
    assert answer.status_code == 200
    message, campaign, step = the_message(workspace)
    [entry] = withdrawals(workspace)
    assert entry["evidence"] == {
        "at": workspace.clock.now().isoformat(), "via": "one-click", "message": message,
        "campaign": campaign, "step": step, "ip": "127.0.0.0/24", "user_agent": AGENT,
    }  # fmt: skip


def test_the_page_button_for_everything_puts_the_evidence_on_every_entry(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        httpx.post(at(base, urls["unsubscribe"]), data={"action": "all"},
                   headers={"User-Agent": AGENT})  # fmt: skip
    message, campaign, _ = the_message(workspace)
    entries = withdrawals(workspace)
    assert [entry["list"] for entry in entries] == ["newsletter", "*"]
    for entry in entries:
        assert entry["evidence"]["via"] == "unsubscribe-page"
        assert (entry["evidence"]["message"], entry["evidence"]["campaign"]) == (message, campaign)
        assert entry["evidence"]["ip"] == "127.0.0.0/24"


def test_complaint_evidence_names_the_message_reporter_and_feedback_type() -> None:
    at_ = datetime(2026, 5, 1, 12, tzinfo=UTC)
    said = complaint_evidence(at_, SentMessage(41, "welcome", "hello"), reporter="yahoo.com",
                              user_agent="Yahoo!-Mail-Feedback/2.0",
                              ip="2001:db8:1:2::7")  # fmt: skip
    assert said == (
        '{"at":"2026-05-01T12:00:00+00:00","campaign":"welcome","feedback_type":"abuse",'
        '"ip":"2001:db8:1::/48","message":41,"reporter":"yahoo.com","step":"hello",'
        '"user_agent":"Yahoo!-Mail-Feedback/2.0","via":"complaint"}'
    )


def test_only_the_network_of_an_address_is_kept() -> None:
    assert truncated_ip("203.0.113.77") == "203.0.113.0/24"
    assert truncated_ip("2001:db8:abcd:12::1") == "2001:db8:abcd::/48"
    assert truncated_ip("unknown") == ""


@pytest.fixture
def mailer(project: Path, database_url: str,
           monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:  # fmt: skip
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)

    return run


def test_withdraw_and_grant_from_the_cli_keep_the_reason_and_ticket(
    mailer: Callable[..., Result], project: Path
) -> None:
    write_csv(project / "news.csv", "email,consent_at\nada@example.com,2026-03-01\n")
    assert mailer("import", "news.csv", "--list", "leads").exit_code == 0
    withdrawn = mailer("consent", "withdraw", "ada@example.com", "--list", "leads",
                       "--reason", "asked by phone", "--reference", "T-1042")  # fmt: skip
    assert withdrawn.exit_code == 0, withdrawn.output
    assert mailer("consent", "grant", "ada@example.com", "--list", "leads").exit_code == 2
    granted = mailer("consent", "grant", "ada@example.com", "--list", "leads",
                     "--reference", "T-1077", "--json")  # fmt: skip
    assert granted.exit_code == 0, granted.output
    history = mailer("consent", "history", "ada@example.com", "--json").stdout
    entries = [e for e in json.loads(history) if e["source"] == "admin"]
    assert [(e["action"], e["evidence"]["via"]) for e in entries] == [
        ("withdrawn", "cli"), ("granted", "cli"),
    ]  # fmt: skip
    assert (entries[0]["evidence"]["reason"], entries[0]["evidence"]["reference"]) == (
        "asked by phone", "T-1042",
    )  # fmt: skip
    assert entries[1]["evidence"]["reference"] == "T-1077"
    shown = json.loads(mailer("consent", "show", "ada@example.com", "--json").stdout)
    assert {row["list"]: row["status"] for row in shown["lists"]}["leads"] == "granted"


def test_an_operator_lifts_a_suppression_with_the_persons_request_as_evidence(
    mailer: Callable[..., Result], project: Path, database_url: str
) -> None:
    """A suppression is lifted only with a reason (how the person asked) and never for an
    erasure; the lift is a ledger entry, so `consent verify` still finds the tables in step
    with the ledger, and a suppression put back by hand has no entry behind it."""
    write_csv(project / "news.csv", "email,consent_at\nada@example.com,2026-03-01\n"
              "bob@example.com,2026-03-01\n")  # fmt: skip
    assert mailer("import", "news.csv", "--list", "leads").exit_code == 0
    assert mailer("consent", "withdraw", "ada@example.com").exit_code == 0  # all mail
    refused = mailer("consent", "grant", "ada@example.com", "--list", "leads", "--reason", "x")
    assert refused.exit_code == 1 and "mailer consent lift" in refused.output
    assert mailer("consent", "lift", "ada@example.com").exit_code == 2  # no evidence
    lifted = mailer("consent", "lift", "ada@example.com", "--reason", "asked by phone",
                    "--reference", "T-2001", "--json")  # fmt: skip
    assert lifted.exit_code == 0, lifted.output
    entry = json.loads(lifted.stdout)["entry"]
    history = json.loads(mailer("consent", "history", "ada@example.com", "--json").stdout)
    assert [(e["entry_id"], e["list"], e["action"], e["source"], e["evidence"]["reference"])
            for e in history if e["action"] == "lifted"] == [
        (entry, "*", "lifted", "admin", "T-2001")]  # fmt: skip
    shown = json.loads(mailer("consent", "show", "ada@example.com", "--json").stdout)
    assert shown["suppressed"] is None
    assert {row["list"]: row["status"] for row in shown["lists"]}["leads"] == "withdrawn"
    assert mailer("consent", "verify").exit_code == 0
    again = mailer("consent", "lift", "ada@example.com", "--reason", "twice")
    assert again.exit_code == 1 and "is not suppressed" in again.output
    granted = mailer("consent", "grant", "ada@example.com", "--list", "leads",
                     "--reference", "T-2001")  # fmt: skip
    assert granted.exit_code == 0, granted.output

    assert mailer("consent", "erase", "bob@example.com", "--yes").exit_code == 0
    erased = mailer("consent", "lift", "bob@example.com", "--reason", "asked")
    assert erased.exit_code == 1 and "an erasure is not lifted" in erased.output
    engine = create_engine(database_url)
    with engine.begin() as connection:  # ada's suppression put back by hand, as SQL can
        connection.execute(insert(suppressions).values(
            address_hash=address_hash(SECRET.encode(), "ada@example.com"),
            email="ada@example.com", reason="admin", created_at=datetime.now(UTC)))  # fmt: skip
    engine.dispose()
    tampered = mailer("consent", "verify")
    assert tampered.exit_code == 1 and "has no ledger entry behind it" in tampered.output


def test_merged_duplicate_rows_name_the_line_their_evidence_came_from(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "dupes.csv", """
        email,first_name,consent_at,consent_ip,consent_source
        ada@example.com,Ada,,,
        bob@example.com,Bob,2026-01-05,198.51.100.1,fair
        ada@example.com,,2026-02-01,203.0.113.9,webinar
        bob@example.com,Bobby,,,
    """)  # fmt: skip
    run_import(workspace, path, "leads")
    with workspace.engine.connect() as connection:
        ada = consent_history(connection, workspace.key, "ada@example.com")
        bob = consent_history(connection, workspace.key, "bob@example.com")
    assert ada[0]["evidence"] == {"file": "dupes.csv", "line": "4", "ip": "203.0.113.9",
                                  "source": "webinar"}  # fmt: skip
    assert ada[0]["occurred_at"] == "2026-02-01T00:00:00+00:00"
    assert bob[0]["evidence"]["line"] == "3"  # a later row without consent keeps row 3's
