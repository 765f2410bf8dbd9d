"""Consent gate 2: the last look at the ledger's projection before a message goes to SMTP.

The engine checked consent when it queued the message (gate 1); hours or days may have passed
since (a retry, a paused campaign), and the contact may have unsubscribed, been suppressed or
left the list. Delivery asks again for every message, in one query per batch, just before the
batch is handed to the relay, and keeps the ledger entry that allowed each message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, and_, exists, select

from mailer.consent.state import SENDABLE
from mailer.store.bulk import one_of
from mailer.store.tables import consent_status, contacts, lists, memberships, suppressions


@dataclass(frozen=True)
class Standing:
    """A contact's standing on one list, as the database says now."""

    member: bool
    status: str  # consent status on the list: none, pending, granted, confirmed, withdrawn
    entry_id: int | None  # the ledger entry behind the status
    suppressed: str | None  # the suppression reason, if the address is suppressed


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


def standings(connection: Connection, list_name: str,
              contact_ids: Iterable[int]) -> dict[int, Standing]:  # fmt: skip
    """Each contact's standing on `list_name`, read in one query."""
    member = exists().where(
        memberships.c.contact_id == contacts.c.id,
        memberships.c.list_id == lists.c.id,
        lists.c.name == list_name,
    )
    suppression = (
        select(suppressions.c.reason)
        .where(suppressions.c.email == contacts.c.email)
        .limit(1)
        .scalar_subquery()
    )
    rows = connection.execute(
        select(contacts.c.id, member.label("member"), suppression.label("suppressed"),
               consent_status.c.status, consent_status.c.entry_id)
        .outerjoin(consent_status, and_(consent_status.c.contact_id == contacts.c.id,
                                        consent_status.c.purpose == list_name))
        .where(one_of(connection, contacts.c.id, contact_ids))
    )  # fmt: skip
    return {
        row.id: Standing(bool(row.member), row.status or "none", row.entry_id, row.suppressed)
        for row in rows
    }


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
