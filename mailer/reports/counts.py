"""What the report counts, read from the database with a few set-based queries, each grouped by
(campaign, step, variant) of the message (the outbox row) a thing happened to.

The period is the messages' `queued_at`: a report of November counts November's messages and
everything they led to (opens, bounces, unsubscribes, conversions), whenever that came.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, distinct, func, literal, select, union_all
from sqlalchemy.sql import Select, Subquery

from mailer.consent.audit import Period
from mailer.delivery.claims import outbox_id
from mailer.store.bulk import one_of
from mailer.store.rollups import REFETCHES
from mailer.store.tables import (
    consent_entries,
    consent_evidence,
    enrollments,
    event_rollups,
    events,
    outbox,
    returned_messages,
    returned_rollups,
)
from mailer.tracking.surveys import EVENT as SURVEY_ANSWER

BASE_VARIANT = "A"  # an outbox row without a variant got the step itself
Key = tuple[str, str, str]  # (campaign, step, variant)

COUNTS = ("queued", "sent", "failed", "skipped", "delivered", "hard_bounces", "soft_bounces",
          "unique_opens", "total_opens", "unique_clicks", "total_clicks", "machine_opens",
          "machine_clicks", "unsubscribes", "complaints", "conversions",
          "survey_answers")  # fmt: skip


@dataclass
class Scope:
    """Which messages: those of `campaigns`, queued within `period`."""

    campaigns: Sequence[str]
    period: Period

    def messages(self) -> list[ColumnElement[bool]]:
        return [outbox.c.campaign.in_(self.campaigns), *self.period.holds(outbox.c.queued_at)]


@dataclass
class Counted:
    """Every count of the report, by (campaign, step, variant); the funnel and the timeline."""

    counts: dict[Key, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    # campaign -> step -> [(enrollment id, hours from entry to that step's sending)]
    reached: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    enrollments: dict[str, Counter[str]] = field(default_factory=dict)  # campaign -> status
    hours_to_convert: dict[str, list[float]] = field(default_factory=dict)
    timeline: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)  # day -> kind


def count_everything(connection: Connection, scope: Scope, include_machine: bool) -> Counted:
    counted = Counted()
    if not scope.campaigns:
        return counted
    _statuses(connection, scope, counted)
    _returns(connection, scope, counted)
    _engagement(connection, scope, include_machine, counted)
    _by_message(connection, scope, counted, "unsubscribes", _unsubscribed_messages(connection))
    _by_message(connection, scope, counted, "survey_answers", _survey_answers(connection))
    _conversions(connection, scope, counted)
    _funnel(connection, scope, counted)
    _timeline(connection, scope, counted)
    return counted


def _variant() -> ColumnElement[str]:
    return func.coalesce(outbox.c.variant, literal(BASE_VARIANT))


def _grouped(*columns: Any) -> Select[Any]:
    variant = _variant().label("variant")
    return select(outbox.c.campaign, outbox.c.step, variant, *columns).group_by(
        outbox.c.campaign, outbox.c.step, variant
    )


def _statuses(connection: Connection, scope: Scope, counted: Counted) -> None:
    """queued: every message made to be sent (sent, failed or still waiting), not skipped."""
    query = _grouped(outbox.c.status, func.count().label("n")).where(*scope.messages())
    for row in connection.execute(query.group_by(outbox.c.status)):
        counts = counted.counts[(row.campaign, row.step, row.variant)]
        if row.status in ("sent", "failed", "skipped"):
            counts[row.status] += row.n
        if row.status != "skipped":
            counts["queued"] += row.n


def _returns(connection: Connection, scope: Scope, counted: Counted) -> None:
    """Bounces and complaints per sent message, each message once: one with a hard bounce and
    an earlier soft one is a hard bounce; two reports of the same complaint are one. Returns
    rolled up by retention count as their rows did."""
    kinds = ("hard", "soft", "complaint")
    returns = union_all(
        select(returned_messages.c.outbox_id, returned_messages.c.classification)
        .where(returned_messages.c.classification.in_(kinds)),
        select(returned_rollups.c.outbox_id, returned_rollups.c.classification)
        .where(returned_rollups.c.classification.in_(kinds)),
    ).subquery()  # fmt: skip
    classification = returns.c.classification
    per_message = (
        select(returns.c.outbox_id.label("message"),
               func.max(case((classification == "hard", 1), else_=0)).label("hard"),
               func.max(case((classification == "soft", 1), else_=0)).label("soft"),
               func.max(case((classification == "complaint", 1), else_=0)).label("complaint"))
        .group_by(returns.c.outbox_id)
        .subquery()
    )  # fmt: skip
    query = (
        _grouped(func.sum(per_message.c.hard).label("hard"),
                 func.sum(case((per_message.c.hard == 0, per_message.c.soft), else_=0))
                 .label("soft"),
                 func.sum(per_message.c.complaint).label("complaint"))
        .select_from(outbox.join(per_message, per_message.c.message == outbox.c.id))
        .where(*scope.messages(), outbox.c.status == "sent")
    )  # fmt: skip
    for row in connection.execute(query):
        counts = counted.counts[(row.campaign, row.step, row.variant)]
        counts["hard_bounces"] += int(row.hard or 0)
        counts["soft_bounces"] += int(row.soft or 0)
        counts["complaints"] += int(row.complaint or 0)


def message_of_event() -> ColumnElement[Any]:
    """The message an open or click was of. Rows recorded before events named it (migration
    0019) are matched to the contact's message of that campaign and step sent last before it."""
    earlier = outbox.alias("earlier")
    guessed = (
        select(earlier.c.id)
        .where(earlier.c.campaign == events.c.name, earlier.c.step == events.c.step,
               earlier.c.contact_id == events.c.contact_id,
               earlier.c.sent_at <= events.c.occurred_at)
        .order_by(earlier.c.sent_at.desc())
        .limit(1)
        .scalar_subquery()
    )  # fmt: skip
    return func.coalesce(events.c.outbox_id, guessed)


def _engagements(connection: Connection, scope: Scope) -> Subquery:
    """Opens and clicks (people's and machines') as (message, kind, day, events): each raw
    event once, beside the roll-ups of older ones (retention.py) with their counts."""
    raw = select(message_of_event().label("message"), events.c.kind,
                 _day(connection).label("day"), literal(1).label("events"))  # fmt: skip
    raw = raw.where(events.c.kind.in_(("open", "click", "machine_open", "machine_click")),
                    events.c.name.in_(scope.campaigns))  # fmt: skip
    # Pixels fetched again are counted, not stored one by one: a machine's opens, as before.
    kind = case((event_rollups.c.kind == REFETCHES, literal("machine_open")),
                else_=event_rollups.c.kind)  # fmt: skip
    rolled = select(event_rollups.c.outbox_id, kind, event_rollups.c.day,
                    event_rollups.c.events)  # fmt: skip
    return union_all(raw, rolled).subquery("engaged")


def _engaged(engaged: Subquery, scope: Scope, *columns: Any) -> Select[Any]:
    """`columns` over the `engaged` of the scope's messages."""
    return (
        select(*columns)
        .select_from(engaged.join(outbox, outbox.c.id == engaged.c.message))
        .where(*scope.messages())
    )  # fmt: skip


def _engagement(connection: Connection, scope: Scope, include_machine: bool,
                counted: Counted) -> None:  # fmt: skip
    """Unique: messages opened (clicked) at least once; total: every open (click). People's
    only, unless `include_machine`; machines' always counted apart."""
    engaged = _engagements(connection, scope)
    kind = engaged.c.kind

    def total(*kinds: str) -> ColumnElement[Any]:
        return func.sum(case((kind.in_(kinds), engaged.c.events), else_=0))

    def unique(*kinds: str) -> ColumnElement[Any]:
        return func.count(distinct(case((kind.in_(kinds), outbox.c.id), else_=None)))

    opens = ("open", "machine_open") if include_machine else ("open",)
    clicks = ("click", "machine_click") if include_machine else ("click",)
    variant = _variant().label("variant")
    query = _engaged(
        engaged, scope, outbox.c.campaign, outbox.c.step, variant,
        unique(*opens).label("unique_opens"), total(*opens).label("total_opens"),
        unique(*clicks).label("unique_clicks"), total(*clicks).label("total_clicks"),
        total("machine_open").label("machine_opens"),
        total("machine_click").label("machine_clicks"),
    ).group_by(outbox.c.campaign, outbox.c.step, variant)  # fmt: skip
    for row in connection.execute(query):
        counts = counted.counts[(row.campaign, row.step, row.variant)]
        for name in ("unique_opens", "total_opens", "unique_clicks", "total_clicks",
                     "machine_opens", "machine_clicks"):  # fmt: skip
            counts[name] += int(getattr(row, name) or 0)


def _unsubscribed_messages(connection: Connection) -> Counter[int]:
    """Messages a recipient unsubscribed through (one-click, the unsubscribe or preference
    page, mailto:), each once: the ledger's withdrawals whose evidence names the message. An
    erased person's evidence is gone, and with it which message it was."""
    query = (
        select(consent_evidence.c.data)
        .select_from(consent_entries.join(consent_evidence,
                                          consent_evidence.c.entry_id == consent_entries.c.id))
        .where(consent_entries.c.source == "unsubscribe",
               consent_entries.c.action == "withdrawn")
    )  # fmt: skip
    messages = set()
    for (data,) in connection.execute(query):
        message = json.loads(data).get("message")
        if isinstance(message, int):
            messages.add(message)
    return Counter(messages)


def _survey_answers(connection: Connection) -> Counter[int]:
    """People's survey answers (one per contact and question: a later one replaces an earlier
    one) by the message they were given in."""
    query = select(events.c.properties).where(events.c.kind == "website",
                                              events.c.name == SURVEY_ANSWER)  # fmt: skip
    answers: Counter[int] = Counter()
    for (properties,) in connection.execute(query):
        message = outbox_id(str(properties.get("message", "")))
        if message is not None:
            answers[message] += 1
    return answers


def _by_message(connection: Connection, scope: Scope, counted: Counted, name: str,
                per_message: Counter[int]) -> None:  # fmt: skip
    """Add `per_message` (outbox id -> how many) to `name` of the messages in the scope."""
    if not per_message:
        return
    query = select(outbox.c.id, outbox.c.campaign, outbox.c.step, _variant().label("variant"))
    query = query.where(one_of(connection, outbox.c.id, per_message), *scope.messages())
    for row in connection.execute(query):
        counted.counts[(row.campaign, row.step, row.variant)][name] += per_message[row.id]


def _conversions(connection: Connection, scope: Scope, counted: Counted) -> None:
    """A converted enrollment counts for the last message of it sent before it converted."""
    later = outbox.alias("later")
    sent_after = (
        select(later.c.id)
        .where(later.c.enrollment_id == outbox.c.enrollment_id, later.c.status == "sent",
               later.c.sent_at > outbox.c.sent_at, later.c.sent_at <= enrollments.c.ended_at)
        .exists()
    )  # fmt: skip
    query = (
        _grouped(func.count(distinct(enrollments.c.id)).label("n"))
        .select_from(outbox.join(enrollments, enrollments.c.id == outbox.c.enrollment_id))
        .where(*scope.messages(), enrollments.c.status == "converted", outbox.c.status == "sent",
               outbox.c.sent_at <= enrollments.c.ended_at, ~sent_after)
    )  # fmt: skip
    for row in connection.execute(query):
        counted.counts[(row.campaign, row.step, row.variant)]["conversions"] += row.n


def _hours(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 3600


def _funnel(connection: Connection, scope: Scope, counted: Counted) -> None:
    """The enrollments that entered within the period: by status, and who reached each step
    (one of its messages sent), how long after entering."""
    entered = [enrollments.c.campaign.in_(scope.campaigns),
               *scope.period.holds(enrollments.c.entered_at)]  # fmt: skip
    for row in connection.execute(
        select(enrollments.c.campaign, enrollments.c.status, func.count().label("n"))
        .where(*entered).group_by(enrollments.c.campaign, enrollments.c.status)
    ):  # fmt: skip
        counted.enrollments.setdefault(row.campaign, Counter())[row.status] += row.n
    for row in connection.execute(
        select(enrollments.c.campaign, enrollments.c.entered_at, enrollments.c.ended_at)
        .where(*entered, enrollments.c.status == "converted", enrollments.c.ended_at.is_not(None))
    ):  # fmt: skip
        hours = _hours(row.entered_at, row.ended_at)
        counted.hours_to_convert.setdefault(row.campaign, []).append(hours)
    reached = (
        select(outbox.c.campaign, outbox.c.step, enrollments.c.id,
               func.min(outbox.c.sent_at).label("sent_at"), enrollments.c.entered_at)
        .select_from(outbox.join(enrollments, enrollments.c.id == outbox.c.enrollment_id))
        .where(*entered, outbox.c.status == "sent")
        .group_by(outbox.c.campaign, outbox.c.step, enrollments.c.id, enrollments.c.entered_at)
    )  # fmt: skip
    for row in connection.execute(reached):
        steps = counted.reached.setdefault(row.campaign, {})
        steps.setdefault(row.step, []).append((row.id, _hours(row.entered_at, row.sent_at)))


def _day(connection: Connection) -> ColumnElement[str]:
    """The UTC date of an event as YYYY-MM-DD (SQLite stores UTC text already)."""
    if connection.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", events.c.occurred_at), "YYYY-MM-DD")
    return func.date(events.c.occurred_at)


def _timeline(connection: Connection, scope: Scope, counted: Counted) -> None:
    """Opens and clicks of the scope's messages per UTC day, people's and machines' apart."""
    engaged = _engagements(connection, scope)
    day, kind = engaged.c.day, engaged.c.kind
    query = _engaged(engaged, scope, outbox.c.campaign, day, kind,
                     func.sum(engaged.c.events).label("n"))  # fmt: skip
    for row in connection.execute(query.group_by(outbox.c.campaign, day, kind)):
        days = counted.timeline.setdefault(row.campaign, {})
        days.setdefault(str(row.day), Counter())[row.kind] += row.n
