"""What an auditor asks of the outbox and the ledger together: which consent allowed a message,
and whether every message of a period had one that still held when it went out.

A message's "authority" is the ledger entry consent gate 2 found when it sent it
(outbox.consent_entry_id). A message breaks the rules when it has none, when that entry is not
a grant or confirmation, or when a withdrawal, expiry or erasure of the same person on the same
list (or on every list) had been recorded after that entry but before the message was sent, or
the address was already suppressed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, case, func, literal, or_, select
from sqlalchemy.sql import ColumnElement

from mailer.consent.person import ALL_LISTS
from mailer.consent.state import SENDABLE
from mailer.errors import MailerError
from mailer.store.tables import (
    consent_entries,
    consent_evidence,
    consent_status,
    contacts,
    outbox,
    suppressions,
)

ENDING_ACTIONS = ("withdrawn", "expired", "erased")  # after one of these, no more mail

authority = consent_entries.alias("authority")
ending = consent_entries.alias("ending")
erasure = consent_entries.alias("erasure")


class UnknownMessageError(MailerError):
    """No sent message has this Message-ID or outbox id."""


@dataclass(frozen=True)
class Period:
    """[since, until): either end open when None."""

    since: datetime | None = None
    until: datetime | None = None

    def holds(self, column: Any) -> list[ColumnElement[bool]]:
        found = []
        if self.since is not None:
            found.append(column >= self.since)
        if self.until is not None:
            found.append(column < self.until)
        return found

    def as_dict(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


@dataclass(frozen=True)
class Authority:
    """The ledger entry that allowed a message, with its evidence where it is still held."""

    entry: int
    list: str
    action: str
    occurred_at: datetime
    recorded_at: datetime
    source: str
    evidence: dict[str, Any] | None  # None: never had any, or erased with the person

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "list": self.list,
            "action": self.action,
            "occurred_at": self.occurred_at.isoformat(),
            "source": self.source,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class SentMessage:
    outbox_id: int
    message_id: str | None
    contact: str | None  # None once the person was erased
    campaign: str
    step: str
    sent_at: datetime
    consent: Authority | None
    problem: str | None  # why this message should not have gone out, or None

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "contact": self.contact,
            "campaign": self.campaign,
            "step": self.step,
            "sent_at": self.sent_at.isoformat(),
            "consent": None if self.consent is None else self.consent.as_dict(),
        }


def find_message(connection: Connection, reference: str) -> SentMessage:
    """The sent message named by its Message-ID (with or without <>) or its outbox id."""
    reference = reference.strip()
    if reference.isdigit():
        where = outbox.c.id == int(reference)
    else:
        where = outbox.c.message_id == f"<{reference.strip('<>')}>"
    row = connection.execute(_sent_query({}).where(where)).first()
    if row is None:
        raise UnknownMessageError(f"{reference}: no sent message has this Message-ID or outbox id")
    return _sent_message(row)


def sent_messages(
    connection: Connection,
    period: Period,
    campaign: str | None = None,
    lists_of: Mapping[str, str] | None = None,
) -> Iterator[SentMessage]:
    """Every message sent in `period` (of one campaign, or all), oldest first, streamed.

    `lists_of` (campaign -> list, from settings) names the list of a message that has no
    authorising entry, whose list the ledger cannot tell.
    """
    query = _sent_query(lists_of or {}).where(*period.holds(outbox.c.sent_at))
    if campaign is not None:
        query = query.where(outbox.c.campaign == campaign)
    query = query.order_by(outbox.c.sent_at, outbox.c.id)
    for row in connection.execution_options(yield_per=2000).execute(query):
        yield _sent_message(row)


def _sent_query(lists_of: Mapping[str, str]) -> Select[Any]:
    message_list = _message_list(lists_of)
    ended_by = (
        select(func.min(ending.c.id))
        .where(
            ending.c.subject_hash == authority.c.subject_hash,
            or_(ending.c.purpose == message_list, ending.c.purpose == ALL_LISTS),
            ending.c.action.in_(ENDING_ACTIONS),
            ending.c.id > authority.c.id,
            ending.c.recorded_at <= outbox.c.sent_at,
        )
        .scalar_subquery()
    )
    suppressed_since = (
        select(suppressions.c.created_at)
        .where(
            suppressions.c.address_hash == authority.c.subject_hash,
            suppressions.c.created_at <= outbox.c.sent_at,
        )
        .scalar_subquery()
    )
    erased = (
        select(func.count())
        .where(erasure.c.subject_hash == authority.c.subject_hash, erasure.c.action == "erased")
        .scalar_subquery()
    )
    return (
        select(
            outbox.c.id, outbox.c.message_id, outbox.c.campaign, outbox.c.step,
            outbox.c.sent_at, contacts.c.email,
            authority.c.id.label("entry"), authority.c.purpose, authority.c.action,
            authority.c.occurred_at, authority.c.recorded_at, authority.c.source,
            consent_evidence.c.data.label("evidence"),
            ended_by.label("ended_by"), suppressed_since.label("suppressed_since"),
            erased.label("erased"),
        )
        .outerjoin(contacts, contacts.c.id == outbox.c.contact_id)
        .outerjoin(authority, authority.c.id == outbox.c.consent_entry_id)
        .outerjoin(consent_evidence, consent_evidence.c.entry_id == authority.c.id)
        .where(outbox.c.sent_at.is_not(None))
    )  # fmt: skip


def _message_list(lists_of: Mapping[str, str]) -> ColumnElement[Any]:
    """The list a message was sent on: its authorising entry's, else its campaign's."""
    if not lists_of:
        return authority.c.purpose
    by_campaign = case(dict(lists_of), value=outbox.c.campaign, else_=literal(None))
    return func.coalesce(authority.c.purpose, by_campaign)


def _sent_message(row: Any) -> SentMessage:
    consent = None
    if row.entry is not None:
        evidence = None if row.evidence is None or row.erased else json.loads(row.evidence)
        consent = Authority(row.entry, row.purpose, row.action, row.occurred_at,
                            row.recorded_at, row.source, evidence)  # fmt: skip
    return SentMessage(row.id, row.message_id, None if row.erased else row.email, row.campaign,
                       row.step, row.sent_at, consent, _problem(row))  # fmt: skip


def _problem(row: Any) -> str | None:
    if row.entry is None:
        return "no ledger entry allowed it"
    if row.action not in SENDABLE:
        return f"its entry {row.entry} is a {row.action}, not a grant"
    if row.recorded_at > row.sent_at:
        return f"its entry {row.entry} was recorded after it was sent"
    if row.ended_by is not None:
        return f"sent after entry {row.ended_by} had withdrawn consent"
    if row.suppressed_since is not None:
        return f"sent after the address was suppressed ({row.suppressed_since.isoformat()})"
    return None


@dataclass(frozen=True)
class Withdrawal:
    """A withdrawal and how fast it took effect: the last message the person got on that list
    before it, and how many they got after it (which must be none)."""

    entry: int
    list: str
    source: str
    recorded_at: datetime
    last_sent_before: datetime | None
    messages_after: int

    def as_dict(self) -> dict[str, Any]:
        gap = None
        if self.last_sent_before is not None:
            gap = (self.recorded_at - self.last_sent_before).total_seconds()
        return {
            "entry": self.entry,
            "list": self.list,
            "source": self.source,
            "recorded_at": self.recorded_at.isoformat(),
            "last_sent_before": self.last_sent_before.isoformat()
            if self.last_sent_before
            else None,
            "seconds_from_last_message": gap,
            "messages_after": self.messages_after,
        }


def withdrawals(connection: Connection, period: Period) -> list[Withdrawal]:
    """Every withdrawal recorded in `period`, oldest first, with the messages around it.

    A message counts for the withdrawal when it went to the same person (by contact, or by
    the subject of its authorising entry once the contact row is gone) on the same list (any
    list for a withdrawal from all), and was allowed by an entry older than the withdrawal: a
    message allowed by a later re-subscription is not "after" it.
    """
    same_person = or_(
        outbox.c.contact_id == ending.c.contact_id,
        authority.c.subject_hash == ending.c.subject_hash,
    )
    on_list = or_(ending.c.purpose == ALL_LISTS, authority.c.purpose == ending.c.purpose)
    around = (
        select(outbox.c.sent_at)
        .select_from(outbox.outerjoin(authority, authority.c.id == outbox.c.consent_entry_id))
        .where(outbox.c.sent_at.is_not(None), same_person, on_list)
    )
    last_before = (
        around.with_only_columns(func.max(outbox.c.sent_at))
        .where(outbox.c.sent_at <= ending.c.recorded_at)
        .scalar_subquery()
    )
    after = (
        around.with_only_columns(func.count())
        .where(
            outbox.c.sent_at > ending.c.recorded_at,
            or_(authority.c.id.is_(None), authority.c.id < ending.c.id),
        )
        .scalar_subquery()
    )
    rows = connection.execute(
        select(ending.c.id, ending.c.purpose, ending.c.source, ending.c.recorded_at,
               last_before.label("last_before"), after.label("after"))
        .where(ending.c.action == "withdrawn", *period.holds(ending.c.recorded_at))
        .order_by(ending.c.id)
    )  # fmt: skip
    return [
        Withdrawal(row.id, row.purpose, row.source, row.recorded_at, row.last_before, row.after)
        for row in rows
    ]


def consents_by_list(connection: Connection) -> list[dict[str, Any]]:
    """Contacts per (list, source of the entry behind their status, status), as held now."""
    rows = connection.execute(
        select(consent_status.c.purpose, consent_entries.c.source, consent_status.c.status,
               func.count().label("contacts"))
        .join(consent_entries, consent_entries.c.id == consent_status.c.entry_id)
        .group_by(consent_status.c.purpose, consent_entries.c.source, consent_status.c.status)
        .order_by(consent_status.c.purpose, consent_entries.c.source, consent_status.c.status)
    )  # fmt: skip
    return [
        {"list": row.purpose, "source": row.source, "status": row.status, "contacts": row.contacts}
        for row in rows
    ]


def ledger_entries(connection: Connection, period: Period) -> list[dict[str, Any]]:
    """Entries recorded in `period` per (list, action, source)."""
    rows = connection.execute(
        select(consent_entries.c.purpose, consent_entries.c.action, consent_entries.c.source,
               func.count().label("entries"))
        .where(*period.holds(consent_entries.c.recorded_at))
        .group_by(consent_entries.c.purpose, consent_entries.c.action, consent_entries.c.source)
        .order_by(consent_entries.c.purpose, consent_entries.c.action, consent_entries.c.source)
    )  # fmt: skip
    return [
        {"list": row.purpose, "action": row.action, "source": row.source, "entries": row.entries}
        for row in rows
    ]


def erasures(connection: Connection, period: Period) -> list[dict[str, Any]]:
    """Erasures recorded in `period`: the ledger entry, when, and the reference kept as its
    evidence, if any (a ticket number; never the person's address)."""
    rows = connection.execute(
        select(consent_entries.c.id, consent_entries.c.occurred_at,
               consent_entries.c.recorded_at, consent_evidence.c.data)
        .outerjoin(consent_evidence, consent_evidence.c.entry_id == consent_entries.c.id)
        .where(consent_entries.c.action == "erased",
               *period.holds(consent_entries.c.recorded_at))
        .order_by(consent_entries.c.id)
    )  # fmt: skip
    return [
        {
            "entry": row.id,
            "occurred_at": row.occurred_at.isoformat(),
            "recorded_at": row.recorded_at.isoformat(),
            "reference": json.loads(row.data) if row.data else None,
        }
        for row in rows
    ]


def sends_summary(
    connection: Connection, period: Period, lists_of: Mapping[str, str]
) -> dict[str, Any]:
    """How many messages went out in `period`, and those that broke the rules."""
    sent, problems = 0, []
    for message in sent_messages(connection, period, lists_of=lists_of):
        sent += 1
        if message.problem:
            problems.append(
                {"outbox_id": message.outbox_id, **message.as_dict(), "problem": message.problem}
            )
    return {"sent": sent, "without_valid_consent": len(problems), "problems": problems}
