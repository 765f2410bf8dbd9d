"""Every fixture of returned mail through the real listener over SMTP (`mailer inbound`), with
the expectations of the classify and ingest tests: what it is, which of our messages it is
about, and what it changed (suppressed or not, ledger entries appended or not). Bounces and
auto-replies go to the bounces+TOKEN@ address their token names, ARF reports to the feedback
address, and what carries no token of ours (so has no VERP address to come to) to the feedback
address too, the only one that takes mail without a token. Real SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailer.returns.inbound import Listening
from mailer.store.tables import consent_entries, contacts, outbox, returned_messages, suppressions
from mailer.workspace import Workspace
from tests.helpers import count
from tests.returns.test_classify import EXPECTED, M1, M2, M3, T1, T2, T3
from tests.returns.test_inbound import FBL, deliver, fixture, listener, project, spool
from tests.returns.test_ingest_cli import sent

__all__ = ["listener", "project", "sent"]  # fixtures, imported to be used here

OUTBOX = {T1: 1, T2: 2, T3: 3, M1: 1, M2: 2, M3: 3}  # the fixtures' tokens and Message-IDs
UNMATCHED = "none (no message matched)"  # what a bounce or complaint about no message does
# What a report does to the message it matched, on a fresh database.
EFFECTS = {  # classification: (action, suppression reason)
    "hard": ("suppressed (hard bounce)", "hard_bounce"),
    "complaint": ("complaint: withdrawn from every list and suppressed", "complained"),
    "soft": ("soft bounce 1 of 3 within 1w", None),
    "delayed": ("none (delay warning)", None),
    "not_bounce": ("none (not a bounce)", None),
    "unparseable": ("none (unparseable)", None),
}


def envelope_recipient(token: str | None, feedback_type: str | None) -> str:
    return f"bounces+{token}@acme.example" if token and not feedback_type else FBL


def suppressed(workspace: Workspace) -> dict[int, str]:
    """Suppression reasons by the outbox id of the message each suppressed person was sent."""
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(outbox.c.id, suppressions.c.reason)
            .join(contacts, contacts.c.id == outbox.c.contact_id)
            .join(suppressions, suppressions.c.email == contacts.c.email)
        )
        return {row.id: row.reason for row in rows}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_through_the_listener_is_classified_matched_and_acted_on(
    name: str, workspace: Workspace, sent: dict[str, int], listener: Listening
) -> None:
    classification, _, _, token, message_id, feedback_type = EXPECTED[name]
    matched = OUTBOX.get(token or "") or OUTBOX.get(message_id or "")
    action, reason = EFFECTS[classification] if matched else (UNMATCHED, None)
    if not matched and classification in ("delayed", "not_bounce", "unparseable"):
        action = EFFECTS[classification][0]  # no effect, matched or not
    entries = count(workspace, consent_entries)

    reply = deliver(listener, envelope_recipient(token, feedback_type), fixture(name))
    assert reply.startswith("250 OK: stored as ")
    listener.handler.settle()

    with workspace.engine.connect() as connection:
        rows = connection.execute(select(returned_messages.c.classification,
                                         returned_messages.c.outbox_id,
                                         returned_messages.c.action)).all()  # fmt: skip
    assert [tuple(row) for row in rows] == [(classification, matched, action)]
    kept = "unparseable" if classification == "unparseable" else "cur"
    [stored] = spool(workspace, kept)
    assert reply.endswith(stored.name) and spool(workspace, "new") == []
    assert listener.handler.counts["failed"] == 0
    assert suppressed(workspace) == ({matched: reason} if matched and reason else {})
    appended = count(workspace, consent_entries) - entries
    assert (appended > 0) == (reason is not None), appended
