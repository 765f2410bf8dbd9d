"""What an auditor asks about one person: their consent per list, its history, a withdrawal, an
export of everything held (GDPR Art. 15/20) and an erasure (Art. 17)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, delete, select, update

from mailer.consent.ledger import NewEntry, canonical_evidence
from mailer.consent.records import current_statuses, lock_ledger, record
from mailer.consent.state import Source, Status
from mailer.consent.suppressions import Reason, suppress, suppressed
from mailer.contacts.addresses import InvalidAddress, address_hash, normalise_address
from mailer.errors import MailerError, UnknownContactError
from mailer.store import form_posts
from mailer.store.tables import (
    consent_entries,
    consent_evidence,
    consent_status,
    contact_tags,
    contacts,
    enrollments,
    event_rollups,
    events,
    lists,
    memberships,
    outbox,
    suppressions,
    website_contact_rollups,
)
from mailer.store.upsert import upsert

ALL_LISTS = "*"  # the purpose of an entry that concerns every list at once


@dataclass(frozen=True)
class Person:
    """An address as the auditor typed it, normalised, with its keyed hash and contact row."""

    email: str
    subject_hash: str
    contact_id: int | None


def find_person(connection: Connection, key: bytes, email: str) -> Person:
    try:
        normal = normalise_address(email)
    except InvalidAddress as error:
        raise MailerError(str(error)) from None
    contact_id = connection.scalar(select(contacts.c.id).where(contacts.c.email == normal))
    return Person(normal, address_hash(key, normal), contact_id)


@dataclass(frozen=True)
class ListConsent:
    list: str
    status: Status
    since: datetime | None
    entry_id: int | None


@dataclass(frozen=True)
class Suppression:
    reason: str
    since: datetime
    entry_id: int | None


@dataclass(frozen=True)
class ConsentOverview:
    email: str
    contact_id: int | None
    lists: list[ListConsent]
    suppression: Suppression | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "contact_id": self.contact_id,
            "lists": [
                {"list": c.list, "status": c.status,
                 "since": c.since.isoformat() if c.since else None, "entry_id": c.entry_id}
                for c in self.lists
            ],
            "suppressed": None if self.suppression is None else {
                "reason": self.suppression.reason,
                "since": self.suppression.since.isoformat(),
                "entry_id": self.suppression.entry_id,
            },
        }  # fmt: skip


def consent_overview(
    connection: Connection, key: bytes, email: str, list_names: list[str]
) -> ConsentOverview:
    """Status per list (every list in settings, plus any other with a record) and suppression."""
    person = find_person(connection, key, email)
    suppression = _suppression(connection, person.subject_hash)
    if person.contact_id is None and suppression is None:
        raise UnknownContactError(f"{person.email}: no contact and no consent record is held")
    found = {
        row.purpose: ListConsent(row.purpose, cast(Status, row.status), row.since, row.entry_id)
        for row in connection.execute(
            select(consent_status).where(consent_status.c.contact_id == person.contact_id)
        )
    }
    names = list(dict.fromkeys([*list_names, *sorted(found)]))
    rows = [found.get(name, ListConsent(name, "none", None, None)) for name in names]
    return ConsentOverview(person.email, person.contact_id, rows, suppression)


def _suppression(connection: Connection, subject_hash: str) -> Suppression | None:
    row = connection.execute(
        select(suppressions).where(suppressions.c.address_hash == subject_hash)
    ).first()
    return None if row is None else Suppression(row.reason, row.created_at, row.entry_id)


def consent_history(connection: Connection, key: bytes, email: str) -> list[dict[str, Any]]:
    """Every ledger entry about the address, oldest first, with its evidence where still held."""
    person = find_person(connection, key, email)
    rows = connection.execute(
        select(consent_entries, consent_evidence.c.data)
        .outerjoin(consent_evidence, consent_evidence.c.entry_id == consent_entries.c.id)
        .where(consent_entries.c.subject_hash == person.subject_hash)
        .order_by(consent_entries.c.id)
    ).all()
    if not rows and person.contact_id is None:
        raise UnknownContactError(f"{person.email}: no contact and no consent record is held")
    return [
        {
            "entry_id": row.id,
            "list": row.purpose,
            "action": row.action,
            "source": row.source,
            "occurred_at": row.occurred_at.isoformat(),
            "recorded_at": row.recorded_at.isoformat(),
            "evidence": None if row.data is None else json.loads(row.data),
            "evidence_erased": row.data is None and row.evidence_digest is not None,
            "entry_hash": row.entry_hash,
        }
        for row in rows
    ]


def withdraw(
    connection: Connection,
    key: bytes,
    email: str,
    double_opt_in: Mapping[str, bool],
    now: datetime,
    list_name: str | None = None,
    source: Source = "admin",
    reason: Reason = "unsubscribed",
    detail: str | None = None,
    evidence: str | None = None,
) -> list[int]:
    """Withdraw consent on one list, or on every list and suppress the address (an opt-out of
    all mail, or a hard bounce: `reason`; `detail` is kept with the suppression). Every entry
    carries `evidence` (consent/evidence.py), with `detail` added to the last one. Returns the
    ledger entries appended: none when the list was already withdrawn, or the address already
    suppressed. The status is read under the ledger's lock, so a second withdrawal at the same
    moment (another request, another process) waits, then appends nothing."""
    lock_ledger(connection)
    person = find_person(connection, key, email)
    if person.contact_id is None and list_name is not None:
        raise UnknownContactError(f"{person.email}: no such contact")
    held = {
        row.purpose: row.status
        for row in connection.execute(
            select(consent_status).where(consent_status.c.contact_id == person.contact_id)
        )
    }
    if list_name is None and suppressed(connection, [person.subject_hash]):
        return []
    if list_name is not None and held.get(list_name) == "withdrawn":
        return []
    purposes = [list_name] if list_name else sorted(p for p, s in held.items() if s != "withdrawn")
    entries = [
        NewEntry(person.subject_hash, person.contact_id, purpose, "withdrawn", source, now,
                 evidence)
        for purpose in purposes
    ]  # fmt: skip
    if list_name is None:
        last = (json.loads(evidence) if evidence else {}) | ({"detail": detail} if detail else {})
        last_evidence = canonical_evidence(last) if last else None
        entries.append(NewEntry(person.subject_hash, person.contact_id, ALL_LISTS, "withdrawn",
                                source, now, last_evidence))  # fmt: skip
    ids = record(connection, entries, double_opt_in, now)
    if list_name is None:
        suppress(connection, address_hash=person.subject_hash, email=person.email,
                 reason=reason, now=now, entry_id=ids[-1], detail=detail)  # fmt: skip
    return ids


def lift_suppression(connection: Connection, key: bytes, email: str, now: datetime,
                     evidence: str) -> int:  # fmt: skip
    """Lift the suppression of `email` at the person's request (`evidence` says how they
    asked): a ledger entry (purpose "*", action "lifted", source "admin") and the suppression
    row gone. Nothing is granted: every list stays withdrawn until the person opts in again
    (the sign-up form then sends a confirmation whose link alone re-subscribes them). An
    erasure is not lifted. Returns the entry appended."""
    lock_ledger(connection)
    person = find_person(connection, key, email)
    held = _suppression(connection, person.subject_hash)
    if held is None:
        raise MailerError(f"{person.email} is not suppressed: nothing to lift")
    if held.reason == "erased":
        raise MailerError(f"{person.email} was erased at their request: an erasure is not "
                          "lifted (a new sign-up of theirs is refused as well)")  # fmt: skip
    [entry_id] = record(connection, [NewEntry(person.subject_hash, person.contact_id, ALL_LISTS,
                                              "lifted", "admin", now, evidence)],
                        {}, now)  # fmt: skip
    connection.execute(delete(suppressions).where(
        suppressions.c.address_hash == person.subject_hash))  # fmt: skip
    return entry_id


def grant(
    connection: Connection,
    key: bytes,
    email: str,
    list_name: str,
    double_opt_in: Mapping[str, bool],
    now: datetime,
    evidence: str | None = None,
) -> int | None:
    """Record consent given outside mailer (a phone call, a signed form) for a contact on one
    list, with its evidence, and make them a member. A suppressed address is refused: its
    suppression is lifted first (lift_suppression), at the person's request. Returns the entry
    appended, or None when the consent on record already covers it."""
    person = find_person(connection, key, email)
    if person.contact_id is None:
        raise UnknownContactError(f"{person.email}: no such contact")
    if _suppression(connection, person.subject_hash) is not None:
        raise MailerError(f"{person.email} is suppressed: once they ask to come back, lift it "
                          "with `mailer consent lift`, then they opt in again")  # fmt: skip
    list_id = connection.scalar(select(lists.c.id).where(lists.c.name == list_name))
    upsert(connection, memberships, [{"list_id": list_id, "contact_id": person.contact_id,
                                      "joined_at": now, "source": "admin"}],
           keys=("list_id", "contact_id"), update=())  # fmt: skip
    status = current_statuses(connection, list_name, [person.contact_id]).get(
        person.contact_id, "none"
    )
    if status not in ("none", "withdrawn"):
        return None
    entry = NewEntry(person.subject_hash, person.contact_id, list_name, "granted", "admin", now,
                     evidence)  # fmt: skip
    (entry_id,) = record(connection, [entry], double_opt_in, now)
    return entry_id


def export_person(connection: Connection, key: bytes, email: str) -> dict[str, Any]:
    """Everything held about the person, as JSON-ready data (GDPR Art. 15 and 20): the contact,
    lists, tags, consent history with evidence, events (opens and clicks with their user agent
    and IP prefix, website events, survey answers), the opens and clicks of their messages
    counted per day (rolled up, and pixels fetched again), their website events rolled up
    (counted per name and day), messages sent or queued,
    enrollments and the suppression with the entry behind it."""
    person = find_person(connection, key, email)
    history = consent_history(connection, key, email)
    contact = connection.execute(select(contacts).where(contacts.c.id == person.contact_id)).first()
    memberships_held = connection.execute(
        select(lists.c.name, memberships.c.joined_at, memberships.c.source)
        .join(lists, lists.c.id == memberships.c.list_id)
        .where(memberships.c.contact_id == person.contact_id)
    ).all()
    tags = connection.scalars(
        select(contact_tags.c.tag).where(contact_tags.c.contact_id == person.contact_id)
    ).all()
    suppression = _suppression(connection, person.subject_hash)
    return {
        "email": person.email,
        "contact": _plain(contact),
        "lists": [
            {"list": m.name, "joined_at": m.joined_at.isoformat(), "source": m.source}
            for m in memberships_held
        ],
        "tags": sorted(tags),
        "consent": history,
        # events.link repeats a click's properties' link (for the pixel writer's index)
        "events": _rows(connection, select(events).where(events.c.contact_id == person.contact_id)
                        .order_by(events.c.occurred_at, events.c.id), drop=("contact_id", "link")),
        "counted": _rows(connection, select(event_rollups)
                         .join(outbox, outbox.c.id == event_rollups.c.outbox_id)
                         .where(outbox.c.contact_id == person.contact_id)
                         .order_by(event_rollups.c.day, event_rollups.c.outbox_id,
                                   event_rollups.c.kind)),
        # their website events that retention rolled up: per name and UTC day
        "website_counted": _rows(connection, select(website_contact_rollups).where(
            website_contact_rollups.c.contact_id == person.contact_id).order_by(
            website_contact_rollups.c.day, website_contact_rollups.c.name),
            drop=("contact_id",)),
        "messages": _rows(connection, select(*MESSAGE_COLUMNS)
                          .where(outbox.c.contact_id == person.contact_id).order_by(outbox.c.id)),
        "enrollments": _rows(connection, select(enrollments)
                             .where(enrollments.c.contact_id == person.contact_id)
                             .order_by(enrollments.c.id), drop=("contact_id",)),
        "suppressed": None if suppression is None else {
            "reason": suppression.reason, "since": suppression.since.isoformat(),
            "entry_id": suppression.entry_id,
        },
    }  # fmt: skip


# What an export shows of a message: not the click targets or the relay's text, which are
# the sender's, not the person's.
MESSAGE_COLUMNS = (outbox.c.id, outbox.c.campaign, outbox.c.step, outbox.c.cycle,
                   outbox.c.variant, outbox.c.status, outbox.c.reason, outbox.c.queued_at,
                   outbox.c.sent_at, outbox.c.message_id, outbox.c.consent_entry_id)  # fmt: skip


def _plain(row: Any, drop: tuple[str, ...] = ()) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in row._mapping.items()
        if name not in drop
    }


def _rows(connection: Connection, query: Any, drop: tuple[str, ...] = ()) -> list[Any]:
    return [_plain(row, drop) for row in connection.execute(query)]


def erase_person(
    connection: Connection, key: bytes, email: str, now: datetime, reference: str | None = None
) -> int:
    """Delete the person's personal data (contact row, attributes, tags, memberships, events,
    enrollments, consent evidence, a form post not yet recorded), append an `erased` entry
    (its evidence: the request's `reference`, which holds no personal data) and keep a
    keyed-hash suppression so that they are never mailed or imported again. The chain stays
    verifiable.

    Their messages stay, pseudonymised (no contact, no click targets, no relay answer), each
    with the ledger entry that allowed it: sent counts do not change and the proof of why a
    message was allowed survives. Messages not yet sent are skipped. Returns the entry's id."""
    person = find_person(connection, key, email)
    their_entries = select(consent_entries.c.id).where(
        consent_entries.c.subject_hash == person.subject_hash
    )
    connection.execute(
        delete(consent_evidence).where(consent_evidence.c.entry_id.in_(their_entries))
    )
    # A sign-up form post of theirs not recorded yet never will be.
    form_posts.forget_address(connection.engine, person.email)
    if person.contact_id is not None:
        _pseudonymise_messages(connection, person.contact_id)
        connection.execute(delete(contacts).where(contacts.c.id == person.contact_id))
    evidence = canonical_evidence({"reference": reference}) if reference else None
    (entry_id,) = record(
        connection,
        [NewEntry(person.subject_hash, None, ALL_LISTS, "erased", "admin", now, evidence)],
        {},
        now,
    )
    connection.execute(
        update(suppressions)
        .where(suppressions.c.address_hash == person.subject_hash)
        .values(email=None, detail=None)
    )
    suppress(connection, address_hash=person.subject_hash, email=None, reason="erased",
             now=now, entry_id=entry_id)  # fmt: skip
    return entry_id


def _pseudonymise_messages(connection: Connection, contact_id: int) -> None:
    """Before the contact row goes (outbox.contact_id is then set NULL by the database)."""
    theirs = outbox.c.contact_id == contact_id
    connection.execute(
        update(outbox).where(theirs, outbox.c.status.in_(("queued", "deferred")))
        .values(status="skipped", reason="the contact was erased", send_after=None)
    )  # fmt: skip
    # A relay's answer may quote the address; click targets may carry it in a query string.
    connection.execute(update(outbox).where(theirs).values(reply=None, links=None))
