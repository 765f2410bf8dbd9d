"""`mailer audit`: which consent allowed each message, whether every message of a period had
one that still held, and the compliance report; over a history built by the real code (import,
tick, delivery to an aiosmtpd server, withdrawal, erasure)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import insert, select

from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.consent.as_of import consents_at
from mailer.consent.audit import consents_by_list
from mailer.consent.ledger import NewEntry
from mailer.consent.person import erase_person, withdraw
from mailer.consent.records import record
from mailer.contacts.addresses import address_hash
from mailer.store.tables import consent_entries, outbox
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET, write_csv
from tests.delivery.helpers import deliver, rows
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import run_import

Mailer = Callable[..., Result]
WITHDRAWN_AT = NOW + timedelta(hours=1)


@pytest.fixture
def history(
    project: Path, environ: dict[str, str], clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> Iterator[Workspace]:
    """Ada and Bob confirmed the newsletter (with evidence), got the welcome message at NOW
    through a real SMTP server, and Bob withdrew from the newsletter an hour later."""
    settings = load_settings(
        project / "settings.toml",
        environ={**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
                 "MAILER_DELIVERY__RENDER_PROCESSES": "0"},
    )  # fmt: skip
    workspace = Workspace(settings, clock)
    write_csv(
        project / "news.csv",
        """
        email,first_name,consent_at,consent_confirmed_at,consent_ip
        ada@example.com,Ada,2026-01-01,2026-01-02,203.0.113.7
        bob@example.com,Bob,2026-01-01,2026-01-02,203.0.113.8
    """,
    )
    run_import(workspace, project / "news.csv", "newsletter")
    assert tick(workspace.engine, workspace.settings, NOW).queued == 2
    assert deliver(workspace).counts()["sent"] == 2
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "bob@example.com", workspace.double_opt_in,
                 WITHDRAWN_AT, list_name="newsletter")  # fmt: skip
    yield workspace
    workspace.close()


@pytest.fixture
def mailer(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Mailer:
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
                   "MAILER_NOW": (NOW + timedelta(days=1)).isoformat()}  # fmt: skip

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)

    return run


def entry_of(workspace: Workspace, purpose: str, action: str, contact_id: int) -> int:
    with workspace.engine.connect() as connection:
        return int(
            connection.scalar(
                select(consent_entries.c.id).where(
                    consent_entries.c.purpose == purpose,
                    consent_entries.c.action == action,
                    consent_entries.c.contact_id == contact_id,
                )
            )
        )


def test_audit_message_names_who_what_when_and_the_entry_with_its_evidence(
    history: Workspace, mailer: Mailer
) -> None:
    ada = rows(history)["ada@example.com"]
    confirmed = entry_of(history, "newsletter", "confirmed", int(str(ada["contact_id"])))
    message_id = str(ada["message_id"])
    found = json.loads(mailer("audit", "message", message_id, "--json").stdout)
    assert {k: v for k, v in found.items() if k != "consent"} == {
        "message_id": message_id, "contact": "ada@example.com", "campaign": "welcome",
        "step": "hello", "sent_at": NOW.isoformat(),
    }  # fmt: skip
    consent = found["consent"]
    assert (consent["entry"], consent["list"], consent["action"], consent["source"]) == (
        confirmed, "newsletter", "confirmed", "import",
    )  # fmt: skip
    assert consent["occurred_at"] == "2026-01-02T00:00:00+00:00"
    assert consent["evidence"] == {"file": "news.csv", "line": "2"}  # the confirming row
    # The same message by its Message-ID without <>, and by its outbox id.
    assert json.loads(mailer("audit", "message", message_id.strip("<>"), "--json").stdout) == found
    assert json.loads(mailer("audit", "message", str(ada["id"]), "--json").stdout) == found
    text = mailer("audit", "message", message_id)
    assert text.exit_code == 0
    assert "to        ada@example.com" in text.stdout
    assert f"entry {confirmed}: confirmed on newsletter" in text.stdout
    assert "evidence  file=news.csv, line=2" in text.stdout


def test_audit_message_of_an_unknown_id_exits_1_saying_so(
    history: Workspace, mailer: Mailer
) -> None:
    result = mailer("audit", "message", "<nope@acme.example>")
    assert result.exit_code == 1
    assert "no sent message has this Message-ID or outbox id" in result.stderr


def test_audit_sends_lists_every_message_with_its_entry_as_text_json_and_csv(
    history: Workspace, mailer: Mailer
) -> None:
    sent = rows(history)
    result = mailer("audit", "sends", "--json")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert sorted(m["contact"] for m in listed) == ["ada@example.com", "bob@example.com"]
    assert all(m["consent"]["action"] == "confirmed" and m["problem"] is None for m in listed)
    table = mailer("audit", "sends", "--campaign", "welcome")
    assert table.exit_code == 0 and "2 messages sent" in table.stdout
    exported = mailer("audit", "sends", "--csv")
    assert exported.exit_code == 0
    by_id = {row["message_id"]: row for row in csv.DictReader(io.StringIO(exported.stdout))}
    assert set(by_id) == {str(row["message_id"]) for row in sent.values()}
    ada = by_id[str(sent["ada@example.com"]["message_id"])]
    assert (ada["contact"], ada["list"], ada["action"], ada["problem"]) == (
        "ada@example.com", "newsletter", "confirmed", "",
    )  # fmt: skip
    later = mailer("audit", "sends", "--since", (NOW + timedelta(seconds=1)).isoformat(), "--json")
    assert json.loads(later.stdout) == []


def test_a_message_sent_after_a_withdrawal_makes_audit_sends_exit_1_naming_it(
    history: Workspace, mailer: Mailer
) -> None:
    sent = rows(history)
    bob, ada = sent["bob@example.com"], sent["ada@example.com"]
    with history.engine.begin() as connection:  # what no code path of mailer may do
        connection.execute(insert(outbox).values(
            campaign="welcome", step="tips", contact_id=bob["contact_id"], cycle=0,
            status="sent", queued_at=NOW, sent_at=WITHDRAWN_AT + timedelta(minutes=5),
            message_id="<forged@acme.example>", consent_entry_id=bob["consent_entry_id"],
            attempts=1,
        ))  # fmt: skip
        connection.execute(insert(outbox).values(
            campaign="welcome", step="tips", contact_id=ada["contact_id"], cycle=0,
            status="sent", queued_at=NOW, sent_at=WITHDRAWN_AT,
            message_id="<unallowed@acme.example>", attempts=1,
        ))  # fmt: skip
    withdrawal = entry_of(history, "newsletter", "withdrawn", int(str(bob["contact_id"])))
    result = mailer("audit", "sends", "--json")
    assert result.exit_code == 1
    assert (f"mailer: <forged@acme.example> (welcome/tips, "
            f"{(WITHDRAWN_AT + timedelta(minutes=5)).isoformat()}): sent after entry "
            f"{withdrawal} had withdrawn consent") in result.stderr  # fmt: skip
    assert "mailer: <unallowed@acme.example>" in result.stderr
    assert "no ledger entry allowed it" in result.stderr
    assert result.stderr.count("mailer: ") == 2  # the two real sends are fine
    assert mailer("audit", "sends", "--until", WITHDRAWN_AT.isoformat()).exit_code == 0
    report = json.loads(mailer("audit", "report", "--json").stdout)
    assert report["sends"]["without_valid_consent"] == 2
    assert [w["messages_after"] for w in report["withdrawals"]] == [1]
    assert report["withdrawals_with_messages_after"] == 1


def test_report_shows_the_ledger_consents_and_how_fast_the_withdrawal_took_effect(
    history: Workspace, mailer: Mailer
) -> None:
    bob = rows(history)["bob@example.com"]
    withdrawal = entry_of(history, "newsletter", "withdrawn", int(str(bob["contact_id"])))
    result = mailer("audit", "report", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ledger"]["intact"] is True
    assert report["ledger"]["entries"] == withdrawal  # 2 grants, 2 confirmations, 1 withdrawal
    assert report["ledger"]["checkpoint"] is None
    assert report["sends"] == {"sent": 2, "without_valid_consent": 0, "problems": []}
    assert report["consents"] == [
        {"list": "newsletter", "source": "admin", "status": "withdrawn", "contacts": 1},
        {"list": "newsletter", "source": "import", "status": "confirmed", "contacts": 1},
    ]  # fmt: skip
    assert report["withdrawals"] == [{
        "entry": withdrawal, "list": "newsletter", "source": "admin",
        "recorded_at": WITHDRAWN_AT.isoformat(), "last_sent_before": NOW.isoformat(),
        "seconds_from_last_message": 3600.0, "messages_after": 0,
    }]  # fmt: skip
    assert report["erasures"] == []
    rates = report["deliverability"]  # nothing came back: 0 of 2, judged ok
    assert (rates["sent"], rates["complaints"], rates["hard_bounces"], rates["status"]) == (
        2, 0, 0, "ok")  # fmt: skip
    text = mailer("audit", "report")
    assert "ledger: intact, 5 entries" in text.stdout
    assert "bounces and complaints: ok: complaints 0.00% (0 of 2" in text.stdout
    assert "checkpoint: no checkpoint" in text.stdout
    assert "messages sent: 2, without valid consent: 0" in text.stdout
    period = mailer("audit", "report", "--since", WITHDRAWN_AT.isoformat(), "--json")
    assert json.loads(period.stdout)["sends"]["sent"] == 0


def test_report_until_a_past_moment_shows_the_consents_the_ledger_held_then(
    history: Workspace, mailer: Mailer
) -> None:
    confirmed = {"list": "newsletter", "source": "import", "status": "confirmed"}
    withdrawn = {"list": "newsletter", "source": "admin", "status": "withdrawn"}
    with history.engine.begin() as connection:  # Ada is erased after Bob's withdrawal
        erase_person(connection, history.key, "ada@example.com", WITHDRAWN_AT + timedelta(hours=1))
    now = json.loads(mailer("audit", "report", "--json").stdout)
    assert now["consents_at"] is None
    assert now["consents"] == [withdrawn | {"contacts": 1}]  # Ada's rows went with her
    before = (NOW + timedelta(minutes=30)).isoformat()  # both confirmed, neither gone yet
    then = json.loads(mailer("audit", "report", "--until", before, "--json").stdout)
    assert then["consents_at"] == before
    assert then["consents"] == [confirmed | {"contacts": 2}]
    between = (WITHDRAWN_AT + timedelta(minutes=30)).isoformat()  # Bob left, Ada still here
    report = json.loads(mailer("audit", "report", "--until", between, "--json").stdout)
    assert report["consents"] == [withdrawn | {"contacts": 1}, confirmed | {"contacts": 1}]
    assert "consents (at 2026-" in mailer("audit", "report", "--until", between).stdout
    page = Path("until.html")
    mailer("audit", "report", "--until", between, "--html", str(page))
    assert "Consents by list, source and status (at 2026-" in page.read_text()


def test_the_ledgers_replay_to_now_counts_what_consent_status_holds(history: Workspace) -> None:
    bob = int(str(rows(history)["bob@example.com"]["contact_id"]))
    with history.engine.begin() as connection:  # an erasure, and an expiry ("none" is held)
        erase_person(connection, history.key, "ada@example.com", WITHDRAWN_AT)
        lapsed = NewEntry(address_hash(history.key, "bob@example.com"), bob, "newsletter",
                          "expired", "scheduler", WITHDRAWN_AT, None)  # fmt: skip
        record(connection, [lapsed], history.double_opt_in, WITHDRAWN_AT)
    with history.engine.connect() as connection:
        held = consents_by_list(connection)
        assert consents_at(connection, NOW + timedelta(days=400)) == held
    assert held == [{"list": "newsletter", "source": "scheduler", "status": "none", "contacts": 1}]


def test_report_checks_the_checkpoints_given_and_shows_the_latest(
    history: Workspace, mailer: Mailer, project: Path
) -> None:
    assert mailer("consent", "checkpoint", "--out", "early.json").exit_code == 0
    with history.engine.begin() as connection:
        withdraw(connection, history.key, "ada@example.com", history.double_opt_in,
                 WITHDRAWN_AT, list_name="newsletter")  # fmt: skip
    later = json.loads((project / "early.json").read_text()) | {"at": "2026-11-25T10:00:00+00:00"}
    (project / "later.json").write_text(json.dumps(later))  # edited: its signature fails
    result = mailer("audit", "report", "--checkpoint", "early.json", "--checkpoint",
                    "later.json", "--json")  # fmt: skip
    ledger = json.loads(result.stdout)["ledger"]
    assert ledger["checkpoint"]["file"] == "later.json"
    assert ledger["checkpoint"]["entries"] == 5
    assert "does not carry a valid signature" in ledger["checkpoint"]["problem"]
    assert ledger["intact"] is False  # a forged checkpoint is a finding, as in consent verify
    text = mailer("audit", "report", "--checkpoint", "early.json").stdout
    assert "checkpoint: early.json of 2026-11-24 10:00, 5 entries, held" in text
    assert "ledger: intact, 6 entries" in text


def test_report_html_is_one_self_contained_file_with_the_json_numbers(
    history: Workspace, mailer: Mailer, project: Path
) -> None:
    with history.engine.begin() as connection:
        erase_person(connection, history.key, "ada@example.com", WITHDRAWN_AT)
    report = json.loads(mailer("audit", "report", "--json").stdout)
    result = mailer("audit", "report", "--html", "report.html")
    assert result.exit_code == 0 and "report written to report.html" in result.stdout
    page = (project / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for remote in ("http://", "https://", "<script", "<link", "src=", "@import"):
        assert remote not in page
    assert f"Intact: {report['ledger']['entries']} entries." in page
    assert report["ledger"]["head_hash"] in page
    assert f"{report['sends']['sent']} messages sent" in page
    [erased] = report["erasures"]
    assert f'<td class="n">{erased["entry"]}</td>' in page
    assert "ada@example.com" not in page


def test_an_erased_persons_message_still_resolves_to_its_entry_without_personal_data(
    history: Workspace, mailer: Mailer
) -> None:
    bob = rows(history)["bob@example.com"]
    confirmed = entry_of(history, "newsletter", "confirmed", int(str(bob["contact_id"])))
    with history.engine.begin() as connection:
        erase_person(connection, history.key, "bob@example.com", WITHDRAWN_AT)
    result = mailer("audit", "message", str(bob["message_id"]), "--json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["contact"] is None
    assert found["consent"]["entry"] == confirmed
    assert found["consent"]["evidence"] is None
    for personal in ("bob@example.com", "203.0.113.8", "Bob"):
        assert personal not in result.stdout
    assert "to        (erased)" in mailer("audit", "message", str(bob["message_id"])).stdout
    sends = mailer("audit", "sends", "--json")
    assert sends.exit_code == 0  # sent before the erasure: allowed then
    assert "bob@example.com" not in sends.stdout


def test_a_message_allowed_by_a_new_opt_in_after_the_withdrawal_is_not_a_breach(
    history: Workspace, mailer: Mailer
) -> None:
    bob = rows(history)["bob@example.com"]
    resubscribed_at = WITHDRAWN_AT + timedelta(hours=1)
    with history.engine.begin() as connection:
        [subject] = connection.scalars(
            select(consent_entries.c.subject_hash).where(
                consent_entries.c.id == bob["consent_entry_id"]
            )
        )
        [again] = record(connection, [NewEntry(subject, int(str(bob["contact_id"])), "newsletter",
                                               "confirmed", "form", resubscribed_at)],
                         history.double_opt_in, resubscribed_at)  # fmt: skip
        connection.execute(insert(outbox).values(
            campaign="welcome", step="tips", contact_id=bob["contact_id"], cycle=0,
            status="sent", queued_at=resubscribed_at, sent_at=resubscribed_at,
            message_id="<again@acme.example>", consent_entry_id=again, attempts=1,
        ))  # fmt: skip
    result = mailer("audit", "sends")
    assert result.exit_code == 0, result.stderr
    report = json.loads(mailer("audit", "report", "--json").stdout)
    assert [w["messages_after"] for w in report["withdrawals"]] == [0]
