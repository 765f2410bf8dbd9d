"""A contact's standing on one list as the database says now: member or not, the consent
status and the ledger entry behind it, the suppression reason. Both consent gates read it,
for a batch of contacts in one query: the engine's when it queues (gate 1), delivery's just
before SMTP (gate 2)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    and_,
    bindparam,
    literal,
    select,
    true,
)

from mailer.store.bulk import listed, one_of_given
from mailer.store.tables import consent_status, contacts, lists, memberships, suppressions


class Standing(NamedTuple):  # the engine builds 50,000 at a time: cheaper than a dataclass
    member: bool
    status: str  # consent status on the list: none, pending, granted, confirmed, withdrawn
    entry_id: int | None  # the ledger entry behind the status
    suppressed: str | None  # the suppression reason, if the address is suppressed
    timezone: str | None  # the contact's zone (gate 1 places send windows in it)


def standings(connection: Connection, list_name: str,
              contact_ids: Iterable[int]) -> dict[int, Standing]:  # fmt: skip
    """Each contact's standing on `list_name`, read in one query."""
    dialect = connection.dialect.name
    rows = connection.execute(_query(dialect), {"list_name": list_name,
                                                "ids": listed(dialect, contact_ids)})  # fmt: skip
    return {contact_id: Standing(joined is not None, status or "none", entry_id, suppressed, zone)
            for contact_id, zone, joined, suppressed, status, entry_id in rows}  # fmt: skip


@cache
def _query(dialect: str) -> Select[Any]:
    """The standing query, built once (delivery asks it for every chunk of 40).

    Every part is a subquery per contact, looked up by its index: a join or EXISTS lets
    PostgreSQL hash the whole list's memberships and consent statuses instead (the planner
    takes reading 10,000 cached rows for cheaper than 40 index probes), which cost delivery's
    gate 2 about 10 ms of server CPU per chunk of 40 on a list of 10,000, growing with the list.
    """
    list_name = bindparam("list_name", type_=String)
    list_id = select(lists.c.id).where(lists.c.name == list_name).scalar_subquery()
    member = _first(literal(1), and_(memberships.c.list_id == list_id,
                                     memberships.c.contact_id == contacts.c.id))  # fmt: skip
    consent = and_(consent_status.c.contact_id == contacts.c.id,
                   consent_status.c.purpose == list_name)  # fmt: skip
    suppression = _first(suppressions.c.reason, suppressions.c.email == contacts.c.email)
    if dialect == "postgresql":
        # Status and entry in one probe of consent_status, still per contact: half the
        # server's CPU of two subqueries (0.24 s against 0.46 s for 50,000 contacts).
        probe = select(consent_status.c.status, consent_status.c.entry_id).where(consent)
        found = probe.limit(1).lateral("consent")
        query = select(contacts.c.id, contacts.c.timezone, member, suppression, found.c.status,
                       found.c.entry_id).select_from(contacts.outerjoin(found, true()))  # fmt: skip
    else:  # SQLite has no LATERAL
        query = select(contacts.c.id, contacts.c.timezone, member, suppression,
                       _first(consent_status.c.status, consent),
                       _first(consent_status.c.entry_id, consent))  # fmt: skip
    return query.where(one_of_given(dialect, contacts.c.id, "ids"))


def _first(column: ColumnElement[Any], where: ColumnElement[bool]) -> Any:
    """`column` of the first row where `where` holds, for each row of the outer query."""
    return select(column).where(where).limit(1).scalar_subquery()
