"""A contact's standing on one list as the database says now: member or not, the consent
status and the ledger entry behind it, the suppression reason. Both consent gates read it,
for a batch of contacts in one query: the engine's when it queues (gate 1), delivery's just
before SMTP (gate 2)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, exists, select

from mailer.store.bulk import one_of
from mailer.store.tables import consent_status, contacts, lists, memberships, suppressions


@dataclass(frozen=True)
class Standing:
    member: bool
    status: str  # consent status on the list: none, pending, granted, confirmed, withdrawn
    entry_id: int | None  # the ledger entry behind the status
    suppressed: str | None  # the suppression reason, if the address is suppressed
    timezone: str | None  # the contact's zone (gate 1 places send windows in it)


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
        select(contacts.c.id, contacts.c.timezone, member.label("member"),
               suppression.label("suppressed"), consent_status.c.status,
               consent_status.c.entry_id)
        .outerjoin(consent_status, and_(consent_status.c.contact_id == contacts.c.id,
                                        consent_status.c.purpose == list_name))
        .where(one_of(connection, contacts.c.id, contact_ids))
    )  # fmt: skip
    return {row.id: Standing(bool(row.member), row.status or "none", row.entry_id,
                             row.suppressed, row.timezone)
            for row in rows}  # fmt: skip
