"""What the ledger says the derived tables must hold, checked against what they hold.

Both consent gates read `consent_status` and `suppressions`, not the ledger, so an edit there
(a withdrawal turned back into a grant, a deleted suppression) would send mail the ledger
forbids. `projection_findings` replays the ledger, the way recording consent builds those
tables, and names every row that disagrees. It also checks that each entry still concerns the
contact it was recorded for: the entry's subject (the keyed hash of the address) is chained,
its contact_id is not, so a moved entry shows as a contact whose address hashes differently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, select

from mailer.consent.ledger import STREAM
from mailer.consent.list_policy import Policies
from mailer.consent.state import Action, Status, status_after
from mailer.contacts.addresses import address_hash
from mailer.store.tables import consent_entries, consent_status, contacts, suppressions

ALL_LISTS = "*"  # an entry that concerns every list (a withdrawal of all mail, an erasure)


def projection_findings(connection: Connection, secret: bytes) -> list[str]:
    """Every disagreement between the ledger and the contacts, consent_status and suppressions
    tables, one line each; empty when they agree."""
    policies = Policies(connection)
    return [
        *_moved_entries(connection, secret),
        *_status_findings(connection, policies),
        *_suppression_findings(connection, secret),
    ]


def _short(subject_hash: str) -> str:
    return f"address hash {subject_hash[:16]}…"


def _moved_entries(connection: Connection, secret: bytes) -> Iterator[str]:
    query = (
        select(
            consent_entries.c.id,
            consent_entries.c.contact_id,
            consent_entries.c.subject_hash,
            contacts.c.email,
        )
        .join(contacts, contacts.c.id == consent_entries.c.contact_id)
        .order_by(consent_entries.c.id)
    )
    hashes: dict[str, str] = {}
    for row in connection.execute(query, execution_options=STREAM):
        if row.email not in hashes:
            hashes = hashes if len(hashes) < 10_000 else {}
            hashes[row.email] = address_hash(secret, row.email)
        if hashes[row.email] != row.subject_hash:
            yield (
                f"consent_entries: entry {row.id} is about another address than that of "
                f"contact {row.contact_id}, which it names: the entry was moved to that "
                "contact, or the contact's address was changed"
            )


@dataclass(frozen=True)
class _Status:
    status: str
    since: datetime
    entry_id: int


def _expected_statuses(connection: Connection,
                       policies: Policies) -> Iterator[tuple[int, dict[str, _Status]]]:  # fmt: skip
    """Per contact, in id order: list -> status, replaying each (contact, list)'s entries as
    recording consent does, each under its list's policy of the time. Lists are grouped, never
    compared: collations differ."""
    query = (
        select(
            consent_entries.c.id,
            consent_entries.c.contact_id,
            consent_entries.c.purpose,
            consent_entries.c.action,
            consent_entries.c.occurred_at,
        )
        .where(
            consent_entries.c.contact_id.is_not(None),
            consent_entries.c.purpose.in_(policies.lists()),
        )
        .order_by(consent_entries.c.contact_id, consent_entries.c.purpose, consent_entries.c.id)
    )
    contact: int | None = None
    statuses: dict[str, _Status] = {}
    current: dict[str, Status] = {}
    for row in connection.execute(query, execution_options=STREAM):
        if row.contact_id != contact:
            if contact is not None and statuses:
                yield contact, statuses
            contact, statuses, current = row.contact_id, {}, {}
        before = current.get(row.purpose, "none")
        after = status_after(before, cast(Action, row.action),
                             policies.at(row.purpose, row.id))  # fmt: skip
        if after != before:  # the entry that decided the status stays the one on record
            current[row.purpose] = after
            statuses[row.purpose] = _Status(after, row.occurred_at, row.id)
    if contact is not None and statuses:
        yield contact, statuses


def _found_statuses(connection: Connection) -> Iterator[tuple[int, dict[str, _Status]]]:
    query = select(consent_status).order_by(consent_status.c.contact_id)
    contact: int | None = None
    statuses: dict[str, _Status] = {}
    for row in connection.execute(query, execution_options=STREAM):
        if row.contact_id != contact:
            if contact is not None:
                yield contact, statuses
            contact, statuses = row.contact_id, {}
        statuses[row.purpose] = _Status(row.status, row.since, row.entry_id)
    if contact is not None:
        yield contact, statuses


def _status_findings(connection: Connection, policies: Policies) -> Iterator[str]:
    """Merge the replayed and the stored statuses, both in contact order."""
    expected, found = _expected_statuses(connection, policies), _found_statuses(connection)
    want, have = next(expected, None), next(found, None)
    while want is not None or have is not None:
        if have is None or (want is not None and want[0] < have[0]):
            assert want is not None
            contact, wanted, held = want[0], want[1], {}
            want = next(expected, None)
        elif want is None or have[0] < want[0]:
            contact, wanted, held = have[0], {}, have[1]
            have = next(found, None)
        else:
            contact, wanted, held = want[0], want[1], have[1]
            want, have = next(expected, None), next(found, None)
        for purpose in sorted(wanted.keys() | held.keys()):
            if wanted.get(purpose) != held.get(purpose):
                yield _status_line(contact, purpose, wanted.get(purpose), held.get(purpose))


def _status_line(contact: int, purpose: str, want: _Status | None, have: _Status | None) -> str:
    def shown(status: _Status | None) -> str:
        if status is None:
            return "no row"
        return f"{status.status} since {status.since:%Y-%m-%d %H:%M} (entry {status.entry_id})"

    return (
        f"consent_status: contact {contact}, list {purpose}: the ledger says "
        f"{shown(want)}, the table holds {shown(have)}"
    )


def _suppression_findings(connection: Connection, secret: bytes) -> Iterator[str]:
    """Every withdrawal of all mail and every erasure suppresses the address, first one kept,
    until an operator lifts it (`lifted`); the stored address (which both gates match on) must
    be the one hashed, unless erased."""
    first: dict[str, int] = {}  # subject -> the entry that suppresses it now
    all_lists = (
        select(consent_entries.c.subject_hash, consent_entries.c.id, consent_entries.c.action)
        .where(consent_entries.c.purpose == ALL_LISTS,
               consent_entries.c.action.in_(("withdrawn", "erased", "lifted")))
        .order_by(consent_entries.c.id)
    )  # fmt: skip
    for entry in connection.execute(all_lists, execution_options=STREAM):
        if entry.action == "lifted":
            first.pop(entry.subject_hash, None)
        else:
            first.setdefault(entry.subject_hash, entry.id)
    erased = set(
        connection.scalars(
            select(consent_entries.c.subject_hash).where(consent_entries.c.action == "erased")
        )
    )
    held: Mapping[str, Any] = {
        row.address_hash: row for row in connection.execute(select(suppressions))
    }
    for subject, entry_id in sorted(first.items()):
        row = held.get(subject)
        if row is None:
            yield (
                f"suppressions: {_short(subject)} is missing: ledger entry {entry_id} "
                "withdrew it from all mail"
            )
        elif row.entry_id != entry_id:
            yield (
                f"suppressions: {_short(subject)}: the ledger says entry {entry_id}, the "
                f"table holds entry {row.entry_id}"
            )
    for subject, row in sorted(held.items()):
        if subject not in first:
            yield (f"suppressions: {_short(subject)} ({row.reason}) has no ledger entry behind it")
        elif row.email is None and subject not in erased:
            yield (
                f"suppressions: {_short(subject)}: the address was blanked, but the person "
                "was never erased (both consent gates match suppressions by address)"
            )
        elif row.email is not None and address_hash(secret, row.email) != subject:
            yield (
                f"suppressions: {_short(subject)}: the stored address {row.email} does not "
                "hash to it (the gates would suppress the wrong address)"
            )
