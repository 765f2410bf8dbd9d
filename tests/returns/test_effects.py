"""What a returned message changes (returns/effects.py): each effect, its ledger entry with the
report as evidence, and the same report twice changing nothing twice. Real databases; the
outbox rows are queued by the engine and marked sent as delivery would."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mailer.campaigns.engine import tick
from mailer.consent.person import consent_history, consent_overview
from mailer.returns.effects import apply_mailto_unsubscribe, apply_returned, report_digest
from mailer.returns.report import Returned
from mailer.store.tables import consent_entries, contacts, outbox, returned_messages
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.helpers import count, run_import


def sent(workspace: Workspace, project: Path, list_name: str, people: list[str],
         at: datetime = NOW) -> dict[str, int]:  # fmt: skip
    """Import `people` on the list, tick (its sequence queues them a message), and mark the
    messages sent at `at` as delivery would. Their outbox ids by address."""
    if list_name == "newsletter":
        head, tail = "email,consent_at,consent_confirmed_at", ",2026-01-01,2026-01-02"
    else:
        head, tail = "Email Address,consent_at", ",2026-04-01"
    path = write_csv(project / f"{list_name}.csv",
                     head + "\n" + "".join(f"{person}{tail}\n" for person in people))  # fmt: skip
    run_import(workspace, path, list_name)
    tick(workspace.engine, workspace.settings, at)
    with workspace.engine.begin() as connection:
        ids = {row.email: row.id for row in connection.execute(
            select(contacts.c.email, outbox.c.id)
            .join(contacts, contacts.c.id == outbox.c.contact_id)
            .where(contacts.c.email.in_(people), outbox.c.status == "queued")
        )}  # fmt: skip
        connection.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids.values()))
            .values(status="sent", sent_at=at, send_after=None, attempts=1)
        )
    return ids


def apply(workspace: Workspace, returned: Returned, outbox_id: int | None, raw: bytes,
          now: datetime = NOW, **more: str) -> str:  # fmt: skip
    evidence = {"digest": report_digest(raw), "file": "bounces/1.eml", **more}
    with workspace.engine.begin() as connection:
        return apply_returned(connection, workspace, returned, outbox_id, evidence, now)


def history(workspace: Workspace, email: str) -> list[dict[str, object]]:
    with workspace.engine.connect() as connection:
        return consent_history(connection, workspace.key, email)


def standing(workspace: Workspace, email: str) -> tuple[dict[str, str], str | None]:
    with workspace.engine.connect() as connection:
        overview = consent_overview(connection, workspace.key, email, [])
    lists = {held.list: held.status for held in overview.lists}
    return lists, overview.suppression.reason if overview.suppression else None


HARD = Returned("hard", "ada@example.com", "5.1.1", why="550 5.1.1 <ada@example.com>: no such user")


@pytest.fixture
def ada(workspace: Workspace, project: Path) -> int:
    """Ada, on the newsletter and the leads list, was sent the welcome message: its id."""
    sent(workspace, project, "leads", ["ada@example.com"])
    return sent(workspace, project, "newsletter", ["ada@example.com"])["ada@example.com"]


def test_hard_bounce_suppresses_at_once_with_the_report_as_evidence(
    workspace: Workspace, ada: int
) -> None:
    action = apply(workspace, HARD, ada, b"the DSN")
    assert action == "suppressed (hard bounce)"
    assert standing(workspace, "ada@example.com") == (
        {"newsletter": "withdrawn", "leads": "withdrawn"}, "hard_bounce")  # fmt: skip
    last = history(workspace, "ada@example.com")[-1]
    assert (last["list"], last["action"], last["source"]) == ("*", "withdrawn", "bounce")
    assert last["evidence"] == {
        "at": NOW.isoformat(), "via": "bounce", "message": ada, "campaign": "welcome",
        "step": "hello", "classification": "hard", "status_code": "5.1.1",
        "why": HARD.why, "digest": report_digest(b"the DSN"), "file": "bounces/1.eml",
        "detail": HARD.why,
    }  # fmt: skip


def test_the_same_report_twice_changes_nothing_twice(workspace: Workspace, ada: int) -> None:
    apply(workspace, HARD, ada, b"the DSN")
    entries = count(workspace, consent_entries)
    again = apply(workspace, HARD, ada, b"the DSN", NOW + timedelta(hours=1))
    assert again == "none (already processed: suppressed (hard bounce))"
    assert count(workspace, consent_entries) == entries
    assert count(workspace, returned_messages) == 1
    # Another report of the same bounce is recorded, and finds the address suppressed.
    assert apply(workspace, HARD, ada, b"a second DSN") == "none (already suppressed)"
    assert count(workspace, consent_entries) == entries


def test_soft_bounces_suppress_at_the_third_within_seven_days(
    workspace: Workspace, ada: int
) -> None:
    soft = Returned("soft", "ada@example.com", "4.2.2", why="452 4.2.2 mailbox full")
    days = [0, 8, 9, 9, 10]  # the first is out of the window by the third
    said = [apply(workspace, soft, ada, f"DSN {n}".encode(), NOW + timedelta(days=day))
            for n, day in enumerate(days)]  # fmt: skip
    assert said == [
        "soft bounce 1 of 3 within 1w", "soft bounce 1 of 3 within 1w",
        "soft bounce 2 of 3 within 1w", "suppressed (3 soft bounces within 1w)",
        "none (already suppressed)",
    ]  # fmt: skip
    assert standing(workspace, "ada@example.com")[1] == "hard_bounce"
    last = history(workspace, "ada@example.com")[-1]
    assert last["source"] == "bounce"
    assert last["evidence"]["digest"] == report_digest(b"DSN 3")  # type: ignore[index]
    assert last["evidence"]["detail"].startswith("3 soft bounces within 1w")  # type: ignore[index]


def test_complaint_withdraws_every_list_and_suppresses(workspace: Workspace, ada: int) -> None:
    complaint = Returned("complaint", None, feedback_type="abuse", why="ARF feedback report")
    action = apply(workspace, complaint, ada, b"the ARF", reporter="Yahoo! Mail",
                   user_agent="Yahoo!-Mail-Feedback/2.0", source_ip="198.51.100.23")  # fmt: skip
    assert action == "complaint: withdrawn from every list and suppressed"
    assert standing(workspace, "ada@example.com") == (
        {"newsletter": "withdrawn", "leads": "withdrawn"}, "complained")  # fmt: skip
    entries = history(workspace, "ada@example.com")[-3:]
    assert [(e["list"], e["source"]) for e in entries] == [
        ("leads", "complaint"), ("newsletter", "complaint"), ("*", "complaint"),
    ]  # fmt: skip
    assert entries[-1]["evidence"] == {
        "at": NOW.isoformat(), "via": "complaint", "message": ada, "campaign": "welcome",
        "step": "hello", "feedback_type": "abuse", "reporter": "Yahoo! Mail",
        "user_agent": "Yahoo!-Mail-Feedback/2.0", "ip": "198.51.100.0/24",
        "classification": "complaint", "why": "ARF feedback report",
        "digest": report_digest(b"the ARF"), "file": "bounces/1.eml",
    }  # fmt: skip
    assert apply(workspace, complaint, ada, b"the ARF") == (
        "none (already processed: complaint: withdrawn from every list and suppressed)"
    )


def test_mailto_unsubscribe_leaves_that_messages_list(workspace: Workspace, ada: int) -> None:
    def mailto(raw: bytes) -> str:
        evidence = {"digest": report_digest(raw), "from": "ada@example.com"}
        with workspace.engine.begin() as connection:
            return apply_mailto_unsubscribe(connection, workspace, ada, evidence, NOW)

    assert mailto(b"unsubscribe") == "unsubscribed from newsletter"
    assert standing(workspace, "ada@example.com") == (
        {"newsletter": "withdrawn", "leads": "granted"}, None)  # fmt: skip
    last = history(workspace, "ada@example.com")[-1]
    assert (last["list"], last["source"]) == ("newsletter", "unsubscribe")
    assert last["evidence"] == {
        "at": NOW.isoformat(), "via": "mailto", "message": ada, "campaign": "welcome",
        "step": "hello", "from": "ada@example.com", "digest": report_digest(b"unsubscribe"),
    }  # fmt: skip
    assert mailto(b"unsubscribe") == "none (already processed: unsubscribed from newsletter)"
    assert mailto(b"unsubscribe, again") == "none (already unsubscribed from newsletter)"
    assert len(history(workspace, "ada@example.com")) == 4  # 2 grants, confirm, 1 withdrawal


def test_what_is_not_a_bounce_or_matches_nothing_changes_nothing(
    workspace: Workspace, ada: int
) -> None:
    entries = count(workspace, consent_entries)
    assert apply(workspace, HARD, None, b"backscatter") == "none (no message matched)"
    assert apply(workspace, Returned("delayed", "ada@example.com", "4.4.7"), ada,
                 b"delayed") == "none (delay warning)"  # fmt: skip
    assert apply(workspace, Returned("not_bounce", "ada@example.com"), ada,
                 b"out of office") == "none (not a bounce)"  # fmt: skip
    assert apply(workspace, Returned("unparseable"), None, b"junk") == "none (unparseable)"
    assert count(workspace, consent_entries) == entries
    assert standing(workspace, "ada@example.com")[1] is None
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(returned_messages.c.classification,
                                         returned_messages.c.outbox_id,
                                         returned_messages.c.campaign)
                                  .order_by(returned_messages.c.id)).all()  # fmt: skip
    assert [tuple(row) for row in rows] == [
        ("hard", None, None), ("delayed", ada, "welcome"), ("not_bounce", ada, "welcome"),
        ("unparseable", None, None),
    ]  # fmt: skip
