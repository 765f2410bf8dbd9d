"""Resends: a message sent once more, with another subject, to its recipients who have no
person's open (or click) of it `after` it was sent (`resend = { after, subject, unless }` on a
step or a broadcast). Its own outbox row, step `<step>.resend` (`broadcast.resend`), with the
contact's variant and cycle: unique per contact and run, so never twice.

Queued with one INSERT ... SELECT per message that has a resend, like broadcasts. Consent gate
1 is asked as for every message (a member of the list, granted or confirmed, not suppressed:
who unsubscribed, bounced or complained meanwhile gets nothing); gate 2 and the recheck at
sending follow as for every message. A resend found more than a day after it was due is not
sent at all, as a broadcast found that late is not (and so a resend added to settings never
reaches messages sent long ago).

A sequence step's resend keeps the rules of the step's own messages: it is queued to go at the
first moment inside the step's send window and outside quiet hours in the contact's time zone
(one INSERT per zone, its `send_after` that moment), and under the frequency cap it is the
least of the contact's messages: it waits while the contact has no room, or has a step due or
waiting for room, and is not sent if no room comes within that day. A broadcast's resend goes
at its time, as the broadcast did."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, Connection, Select, and_, exists, func, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.selectable import NamedFromClause

from mailer.campaigns.ab_tests import people_engaged
from mailer.campaigns.broadcast_state import LATE_LIMIT
from mailer.campaigns.cap_queue import CAPPED, ON_THE_WAY
from mailer.campaigns.timing import inside_all, parse_window, send_windows
from mailer.config import Campaign, Resend, Settings, Step, resent_name
from mailer.consent.state import SENDABLE
from mailer.logs import logger
from mailer.store.bulk import inserted
from mailer.store.tables import (
    UTCDateTime,
    consent_status,
    contacts,
    enrollments,
    lists,
    memberships,
    outbox,
    suppressions,
)

ENGAGEMENT = {"opened": "opens", "clicked": "clicks"}  # resend.unless -> what counts (people's)


def queue_resends(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                  now: datetime) -> int:  # fmt: skip
    """Queue the resends of the campaign's messages that are due; return how many."""
    queued = 0
    for step in campaign.messages():
        if step.resend is not None:
            queued += _queue_resend(connection, settings, name, campaign, step, step.resend,
                                    now)  # fmt: skip
    return queued


def _queue_resend(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                  step: Step, resend: Resend, now: datetime) -> int:  # fmt: skip
    original, again = outbox.alias("original"), outbox.alias("again")
    due_by = now - resend.after
    conditions = [
        original.c.campaign == name, original.c.step == step.name,
        original.c.status == "sent", original.c.sent_at <= due_by,
        original.c.sent_at > due_by - LATE_LIMIT,
        ~people_engaged(ENGAGEMENT[resend.unless], now, original.c.id),
        ~exists().where(again.c.campaign == name, again.c.step == resent_name(step.name),
                        again.c.contact_id == original.c.contact_id,
                        again.c.cycle == original.c.cycle),
        exists().where(memberships.c.contact_id == contacts.c.id,
                       memberships.c.list_id == lists.c.id, lists.c.name == campaign.list_name),
        consent_status.c.status.in_(SENDABLE),  # consent gate 1
        ~exists().where(suppressions.c.email == contacts.c.email),
    ]  # fmt: skip
    if campaign.kind == "sequence":  # a run that converted or exited meanwhile is over
        running = enrollments.c.status.in_(("active", "completed"))
        conditions.append(exists().where(enrollments.c.id == original.c.enrollment_id, running))
        conditions += _room_under_cap(settings, original.c.contact_id, now)
    windows = [parse_window(window) for window, _ in send_windows(settings, step)]
    if campaign.kind != "sequence" or not windows:
        return _insert(connection, name, campaign, step, original, conditions, now, now)
    zone = func.coalesce(contacts.c.timezone, settings.default_timezone)
    zones = connection.scalars(_recipients(campaign, original, conditions, zone).distinct())
    queued = 0
    for local in zones.all():
        try:
            send_after = inside_all(windows, now, local)
        except (ZoneInfoNotFoundError, ValueError) as error:  # one zone's failure is its own
            logger.error("resend of %s.%s not queued for the contacts of time zone %r: %s",
                         name, step.name, local, error)  # fmt: skip
            continue
        queued += _insert(connection, name, campaign, step, original,
                          [*conditions, zone == local], now, send_after)  # fmt: skip
    return queued


def _room_under_cap(settings: Settings, contact_id: ColumnElement[int],
                    now: datetime) -> list[ColumnElement[bool]]:  # fmt: skip
    """Under the frequency cap, a resend takes a slot last: only while the contact has room in
    the window and no step of any sequence is due or waiting for room (which gets it first)."""
    cap = settings.engine.cap()
    if cap is None:
        return []
    limit, window = cap
    counted, waiting = outbox.alias("counted"), enrollments.alias("waiting")
    messages = (select(func.count()).select_from(counted)
                .where(counted.c.contact_id == contact_id, counted.c.status.in_(ON_THE_WAY),
                       counted.c.queued_at > now - window)
                .scalar_subquery())  # fmt: skip
    due = exists().where(
        waiting.c.contact_id == contact_id, waiting.c.status == "active",
        or_(waiting.c.due_at <= now, waiting.c.reason.startswith(CAPPED)),
    )  # fmt: skip
    return [messages < limit, ~due]


def _recipients(
    campaign: Campaign, original: NamedFromClause, conditions: list[ColumnElement[bool]],
    *columns: ColumnElement[Any],
) -> Select[Any]:  # fmt: skip
    return (
        select(*columns)
        .select_from(original)
        .join(contacts, contacts.c.id == original.c.contact_id)
        .join(consent_status, and_(consent_status.c.contact_id == contacts.c.id,
                                   consent_status.c.purpose == campaign.list_name))
        .where(*conditions)
    )  # fmt: skip


def _insert(connection: Connection, name: str, campaign: Campaign, step: Step,
            original: NamedFromClause, conditions: list[ColumnElement[bool]], now: datetime,
            send_after: datetime) -> int:  # fmt: skip
    """Queue the resends of `step` to the recipients the conditions leave, to go at
    `send_after`."""
    recipients = _recipients(
        campaign, original, conditions,
        literal(name), literal(resent_name(step.name)), original.c.contact_id,
        original.c.cycle, original.c.enrollment_id, original.c.variant, literal("queued"),
        consent_status.c.entry_id, literal(now, UTCDateTime), literal(send_after, UTCDateTime),
    )  # fmt: skip
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    columns = ["campaign", "step", "contact_id", "cycle", "enrollment_id", "variant", "status",
               "consent_entry_id", "queued_at", "send_after"]  # fmt: skip
    statement = (
        dialect.insert(outbox).from_select(columns, recipients)
        .on_conflict_do_nothing(index_elements=["campaign", "step", "contact_id", "cycle"])
    )  # fmt: skip
    return inserted(connection, statement)
