"""Consent gate 2: the last look at the ledger's projection before a message goes to SMTP.

The engine checked consent when it queued the message (gate 1); hours or days may have passed
since (a retry, a paused campaign), and the contact may have unsubscribed, been suppressed or
left the list. Delivery asks again for every message, in one query per batch, just before the
batch is handed to the relay, and keeps the ledger entry that allowed each message.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection

from mailer.consent.standing import Standing, standings
from mailer.consent.state import SENDABLE


def refusal(standing: Standing | None) -> str | None:
    """Why this message may not be sent, or None when it may."""
    if standing is None:
        return "no such contact"
    if standing.suppressed:
        return f"suppressed ({standing.suppressed})"
    if standing.status not in SENDABLE:
        return f"no consent ({standing.status})"
    if not standing.member:
        return "left the list"
    return None


def check(connection: Connection, lists_of: Mapping[int, str],
          contact_of: Mapping[int, int]) -> dict[int, tuple[str | None, int | None]]:  # fmt: skip
    """For each outbox id: (why it may not be sent or None, the ledger entry that allows it).

    `lists_of` maps outbox id -> the campaign's list, `contact_of` outbox id -> contact id.
    """
    by_list: dict[str, list[int]] = {}
    for outbox_id, list_name in lists_of.items():
        by_list.setdefault(list_name, []).append(contact_of[outbox_id])
    found = {name: standings(connection, name, ids) for name, ids in by_list.items()}
    verdicts = {}
    for outbox_id, list_name in lists_of.items():
        standing = found[list_name].get(contact_of[outbox_id])
        reason = refusal(standing)
        verdicts[outbox_id] = (reason, None if reason or standing is None else standing.entry_id)
    return verdicts
