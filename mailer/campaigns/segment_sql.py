"""Segments compiled to SQL: one WHERE clause over `contacts`, the same on SQLite and
PostgreSQL, so the database finds the contacts (with its indexes), never Python row by row."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
)

from mailer.campaigns.segments import (
    PREVIOUS,
    Both,
    Compare,
    Consent,
    Contains,
    Either,
    Engagement,
    Event,
    Exists,
    InList,
    Not,
    OneOf,
    Operator,
    RelativeTime,
    Segment,
    SegmentError,
    Sent,
    Tagged,
    Value,
)
from mailer.config import Settings
from mailer.contacts.scoring import growth
from mailer.store.json_values import JsonBoolean, JsonNumber, JsonText, number_value
from mailer.store.rollups import REFETCHES
from mailer.store.tables import (
    consent_status,
    contact_tags,
    contacts,
    event_rollups,
    events,
    lists,
    memberships,
    outbox,
    website_contact_rollups,
)

# When a contact entered this run of a sequence: a time, or a column such as
# enrollments.entered_at that the compiled query joins (one bound per enrollment).
Since = datetime | ColumnElement[datetime]

# outbox.variant of a message of the base variant, or of a step without variants (engine.py)
BASE_VARIANT = "A"

COLUMNS = {name: contacts.c[name] for name in ("email", "first_name", "last_name", "locale",
                                                "timezone", "stage")}  # fmt: skip


class SegmentCompiler:
    """Compiles segments for one moment (`now`) and one set of attribute types."""

    def __init__(
        self,
        now: datetime,
        attribute_types: Mapping[str, str],
        previous: tuple[str, str] | None = None,  # (campaign, step) that `previous` means
        half_life: timedelta = timedelta(days=30),  # of the lead score
        first_stage: str | None = None,  # where contacts without a stage are
        *,
        entered: Since | None = None,  # when the contact entered this run of the sequence
        goal: bool = False,  # every event, open and click counts only from `entered` on
        # [retention] events_after: opens and clicks older than this are counted in
        # event_rollups only (retention.py), where "opened" and "clicked" read them too
        rolled_up_after: timedelta | None = None,
        # [retention] website_events_after: website events older than this are counted per
        # contact, name and day in website_contact_rollups, where `event "..."` reads them too
        website_rolled_up_after: timedelta | None = None,
    ) -> None:
        self.now = now.astimezone(UTC).replace(microsecond=0)
        self.types = attribute_types
        self.previous = previous
        self.half_life = half_life
        self.first_stage = first_stage
        self.entered = entered
        self.goal = goal
        self.rolled_up_after = rolled_up_after
        self.website_rolled_up_after = website_rolled_up_after

    @classmethod
    def for_settings(cls, settings: Settings, now: datetime,
                     previous: tuple[str, str] | None = None, *, entered: Since | None = None,
                     goal: bool = False) -> SegmentCompiler:  # fmt: skip
        stages = settings.lifecycle.stages
        return cls(now, settings.attributes, previous, settings.scoring.half_life,
                   stages[0] if stages else None, entered=entered, goal=goal,
                   rolled_up_after=settings.retention.events_after,
                   website_rolled_up_after=settings.retention.website_events_after)  # fmt: skip

    def where(self, segment: Segment) -> ColumnElement[bool]:
        if isinstance(segment, Not):
            return not_(self.where(segment.inner))
        if isinstance(segment, Both):
            return and_(*(self.where(part) for part in segment.parts))
        if isinstance(segment, Either):
            return or_(*(self.where(part) for part in segment.parts))
        if isinstance(segment, Compare | OneOf | Contains | Exists):
            # A missing value compares as false, never as NULL: `not` must then be true.
            return func.coalesce(self._field(segment), false(), type_=Boolean)
        if isinstance(segment, Tagged):
            return exists().where(contact_tags.c.contact_id == contacts.c.id,
                                  contact_tags.c.tag == segment.tag)  # fmt: skip
        if isinstance(segment, InList):
            return exists().where(
                memberships.c.contact_id == contacts.c.id,
                memberships.c.list_id == lists.c.id,
                lists.c.name == segment.name,
            )
        if isinstance(segment, Consent):
            return self._consent(segment)
        if isinstance(segment, Event):
            return self._event(segment)
        if isinstance(segment, Sent):
            return self._sent(segment)
        return self._engagement(segment)

    def _field(self, segment: Compare | OneOf | Contains | Exists) -> ColumnElement[bool]:
        if segment.field == "score":
            return self._score(segment)
        kind = self._kind(segment.field)
        condition: ColumnElement[bool]
        if isinstance(segment, Exists):  # a value of any type (JSON null is none)
            condition = self._target(segment.field, "any").is_not(None)
        elif isinstance(segment, Contains):  # only text contains text
            target = self._target(segment.field, "string")
            condition = target.contains(segment.text, autoescape=True)
        elif isinstance(segment, OneOf):
            target = self._target(segment.field, kind)
            condition = target.in_([self._value(segment.field, kind, v) for v in segment.values])
        else:
            target = self._target(segment.field, kind)
            condition = _compare(target, segment.op,
                                 self._value(segment.field, kind, segment.value))  # fmt: skip
        return condition

    def _score(self, segment: Compare | OneOf | Contains | Exists) -> ColumnElement[bool]:
        """`score > 50`: the decayed score, compared without computing it per row."""
        if not isinstance(segment, Compare) or not isinstance(segment.value, float):
            raise SegmentError("score is a number: compare it, e.g. score >= 20")
        threshold = segment.value * growth(self.now, self.half_life)
        return _compare(contacts.c.score_epoch, segment.op, threshold)

    def _kind(self, field: str) -> str:
        return "string" if field in COLUMNS else self.types.get(field, "string")

    def _target(self, field: str, kind: str) -> Any:
        if field == "stage" and self.first_stage is not None:
            return func.coalesce(contacts.c.stage, self.first_stage)
        if field in COLUMNS:
            return COLUMNS[field]
        return _json_target(contacts.c.attributes[field], kind)

    def _value(self, field: str, kind: str, value: Value) -> Any:
        if isinstance(value, RelativeTime):
            moment = self.now + value.offset
            if kind == "date":
                return moment.date().isoformat()
            if kind == "datetime":
                return moment.isoformat()
            raise SegmentError(
                f"{field} is not a date: declare it in [attributes] "
                f'({field} = "date" or "datetime") to compare it with now'
            )
        if kind in ("integer", "number"):
            if not isinstance(value, float):
                raise SegmentError(f"{field} is a number: compare it with a number")
            return number_value(value)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise SegmentError(f"{field} is true or false: compare it with true or false")
            return literal(value)  # a parameter: SQLAlchemy takes a bare True for `IS` only
        if not isinstance(value, str):
            raise SegmentError(
                f"{field} is text: compare it with a quoted value, or declare it "
                f'in [attributes] ({field} = "integer") to compare numbers'
            )
        return value

    def _consent(self, segment: Consent) -> ColumnElement[bool]:
        on_record = exists().where(
            consent_status.c.contact_id == contacts.c.id,
            consent_status.c.purpose == segment.list_name,
        )
        status = consent_status.c.status
        if segment.status is None:
            return on_record.where(status.in_(("granted", "confirmed")))
        if segment.status == "none":
            return not_(on_record.where(status != "none"))
        return on_record.where(status == segment.status)

    def _event(self, segment: Event) -> ColumnElement[bool]:
        conditions = [events.c.kind == "website", events.c.name == segment.name]
        for where in segment.where:
            kind = _kind_of(where.value)
            target = _json_target(events.c.properties[where.field], kind)
            value = self._value(where.field, kind, where.value)
            conditions.append(func.coalesce(_compare(target, where.op, value), false()))
        if segment.within is not None:
            conditions.append(events.c.occurred_at >= self.now - segment.within)
        since = self._since(segment, self.goal)
        if since is not None:
            conditions.append(events.c.occurred_at >= since)
        counted = self._website_counted(segment, since)
        if segment.count is None:
            stored = exists().where(events.c.contact_id == contacts.c.id, *conditions)
            return stored if counted is None else or_(stored, exists().where(*counted))
        op, threshold = segment.count
        if segment.where and not _holds_for_zero(op, threshold) and since is None:
            # Only contacts with events can pass, and a property filter makes each per-contact
            # count read event rows, not just the index: group the window's events once
            # instead (bench/segment_bench.py: 1.8 s -> 0.26 s on PostgreSQL, 1.4 -> 0.65 s on
            # SQLite). Without a filter the per-contact count reads only the index and wins.
            grouped = (select(events.c.contact_id).where(*conditions)
                       .group_by(events.c.contact_id)
                       .having(_compare(func.count(), op, threshold)))  # fmt: skip
            return contacts.c.id.in_(grouped)
        number: ColumnElement[int] = (
            select(func.count())
            .where(events.c.contact_id == contacts.c.id, *conditions)
            .scalar_subquery()
        )
        if counted is not None:
            rolled = website_contact_rollups.c.events
            number = number + select(func.coalesce(func.sum(rolled), 0)).where(
                *counted).scalar_subquery()  # fmt: skip
        return _compare(number, op, threshold)

    def _website_counted(self, segment: Event, since: Since | None) -> list[Any] | None:
        """What picks the contact's rolled-up counts of `segment`'s event (retention.py);
        None where none can match: nothing is rolled up, the window is shorter than what is
        kept raw, or a property filter asks what a count no longer holds (`mailer check`
        warns). A window or a run's start takes a day's count whole if its latest event is
        inside."""
        reach = self.website_rolled_up_after
        if reach is None or segment.where or (segment.within is not None
                                              and segment.within <= reach):  # fmt: skip
            return None
        rolled = website_contact_rollups.c
        counted = [rolled.contact_id == contacts.c.id, rolled.name == segment.name]
        if segment.within is not None:
            counted.append(rolled.last_at >= self.now - segment.within)
        if since is not None:
            counted.append(rolled.last_at >= since)
        return counted

    def _engagement(self, segment: Engagement) -> ColumnElement[bool]:
        kinds = (segment.kind, f"machine_{segment.kind}") if segment.machines else (segment.kind,)
        conditions = [events.c.contact_id == contacts.c.id, events.c.kind.in_(kinds),
                      *self._about_messages(segment, events.c.occurred_at, events.c.name,
                                            events.c.step)]  # fmt: skip
        if segment.variant is not None:
            conditions.append(_of_variant(segment.variant))
        stored = exists().where(*conditions)
        reach = self.rolled_up_after
        if reach is None or (segment.within is not None and segment.within <= reach):
            return stored  # nothing rolled up is that recent
        # The message's opens (clicks) counted per day once their rows were rolled up; and,
        # with machines, the pixels fetched again, counted as they came (store/rollups.py).
        message = outbox.alias("rolled_message")  # not the caller's outbox, if it reads one
        rolled = kinds + ((REFETCHES,) if segment.machines and segment.kind == "open" else ())
        counted = [message.c.contact_id == contacts.c.id, event_rollups.c.outbox_id == message.c.id,
                   event_rollups.c.kind.in_(rolled),
                   *self._about_messages(segment, event_rollups.c.last_at, message.c.campaign,
                                         message.c.step)]  # fmt: skip
        if segment.variant is not None:
            counted.append(func.coalesce(message.c.variant, BASE_VARIANT) == segment.variant)
        return or_(stored, exists().where(*counted))

    def _sent(self, segment: Sent) -> ColumnElement[bool]:
        """Messages the relay accepted, by when: a status of sent and its sent_at."""
        conditions = [outbox.c.contact_id == contacts.c.id, outbox.c.status == "sent",
                      *self._about_messages(segment, outbox.c.sent_at, outbox.c.campaign,
                                            outbox.c.step)]  # fmt: skip
        if segment.variant is not None:
            conditions.append(func.coalesce(outbox.c.variant, BASE_VARIANT) == segment.variant)
        if segment.before is not None:
            conditions.append(outbox.c.sent_at < self.now + segment.before.offset)
        if segment.count is None:
            return exists().where(*conditions)
        counted = select(func.count()).where(*conditions).scalar_subquery()
        return _compare(counted, *segment.count)

    def _about_messages(self, segment: Engagement | Sent, at: Any, campaign_column: Any,
                        step_column: Any) -> list[ColumnElement[bool]]:  # fmt: skip
        """What opens, clicks and sent messages share: which campaign and step (`previous`
        being the step before, in this run only), and when (`within`, this run of a goal)."""
        conditions: list[ColumnElement[bool]] = []
        campaign, step = segment.campaign, segment.step
        since = self._since(segment, self.goal or campaign == PREVIOUS)
        if since is not None:  # this run's messages only: an earlier run's open is not "previous"
            conditions.append(at >= since)
        if campaign == PREVIOUS:
            if self.previous is None:
                raise SegmentError("'previous' means the step before: use it in a step's "
                                   "condition, from the second step on")  # fmt: skip
            campaign, step = self.previous
        if campaign is not None:
            conditions.append(campaign_column == campaign)
        if step is not None:
            conditions.append(step_column == step)
        if segment.within is not None:
            conditions.append(at >= self.now - segment.within)
        return conditions

    def _since(self, segment: Event | Engagement | Sent, this_run: bool) -> Since | None:
        """From when `segment` counts what happened: None for all time."""
        return self.entered if this_run and not segment.ever else None


def _of_variant(variant: str) -> ColumnElement[bool]:
    """The open or click was of a message of `variant`: the message it names (events.outbox_id),
    or, for one recorded before migration 0019, the contact's message of that campaign and step
    (a contact gets the same variant of a step every time: timing.pick_variant)."""
    message = outbox.alias("message")
    return exists().where(
        func.coalesce(message.c.variant, BASE_VARIANT) == variant,
        or_(message.c.id == events.c.outbox_id,
            and_(events.c.outbox_id.is_(None), message.c.contact_id == events.c.contact_id,
                 message.c.campaign == events.c.name, message.c.step == events.c.step)),
    )  # fmt: skip


def _holds_for_zero(op: Operator, threshold: int) -> bool:
    """Whether `0 op threshold`: then contacts without any event match too."""
    return {"=": threshold == 0, "!=": threshold != 0, "<": threshold > 0,
            ">": threshold < 0, "<=": threshold >= 0, ">=": threshold <= 0}[op]  # fmt: skip


def _json_target(element: Any, kind: str) -> Any:
    """A value of a JSON column as the comparison's type: NULL (so the comparison is false)
    when it holds another type, as for a missing value."""
    if kind == "any":
        return element.as_string()
    if kind in ("integer", "number"):
        return JsonNumber(element)
    if kind == "boolean":
        return JsonBoolean(element)
    return JsonText(element)  # text, and dates written as text (ISO 8601 sorts as it reads)


def _kind_of(value: Value) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, float) else "string"


def _compare(target: Any, op: Operator, value: Any) -> ColumnElement[bool]:
    comparisons = {
        "=": target.__eq__, "!=": target.__ne__, "<": target.__lt__, ">": target.__gt__,
        "<=": target.__le__, ">=": target.__ge__,
    }  # fmt: skip
    result: ColumnElement[bool] = comparisons[op](value)
    return result


def count_segment(connection: Connection, condition: ColumnElement[bool]) -> int:
    return int(connection.scalar(select(func.count()).select_from(contacts).where(condition)) or 0)


def sample_segment(
    connection: Connection, condition: ColumnElement[bool], limit: int
) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(contacts.c.id, contacts.c.email, contacts.c.first_name, contacts.c.last_name)
        .where(condition)
        .order_by(contacts.c.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]
