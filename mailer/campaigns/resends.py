"""Resends: a message sent once more, with another subject, to its recipients who have no
person's open (or click) of it `after` it was sent (`resend = { after, subject, unless }` on a
step or a broadcast). Its own outbox row, step `<step>.resend` (`broadcast.resend`), with the
contact's variant and cycle: unique per contact and run, so never twice.

Queued with one INSERT ... SELECT per message that has a resend, like broadcasts. Consent gate
1 is asked as for every message (a member of the list, granted or confirmed, not suppressed:
who unsubscribed, bounced or complained meanwhile gets nothing); gate 2 and the recheck at
sending follow as for every message. A resend found more than a day after it was due is not
sent at all, as a broadcast found that late is not (and so a resend added to settings never
reaches messages sent long ago)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, exists, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from mailer.campaigns.ab_tests import people_engaged
from mailer.campaigns.broadcast_state import LATE_LIMIT
from mailer.config import Campaign, Resend, Settings, Step, resent_name
from mailer.consent.state import SENDABLE
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
            queued += _queue_resend(connection, name, campaign, step, step.resend, now)
    return queued


def _queue_resend(connection: Connection, name: str, campaign: Campaign, step: Step,
                  resend: Resend, now: datetime) -> int:  # fmt: skip
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
    recipients = (
        select(literal(name), literal(resent_name(step.name)), original.c.contact_id,
               original.c.cycle, original.c.enrollment_id, original.c.variant, literal("queued"),
               consent_status.c.entry_id, literal(now, UTCDateTime), literal(now, UTCDateTime))
        .select_from(original)
        .join(contacts, contacts.c.id == original.c.contact_id)
        .join(consent_status, and_(consent_status.c.contact_id == contacts.c.id,
                                   consent_status.c.purpose == campaign.list_name))
        .where(*conditions)
    )  # fmt: skip
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    columns = ["campaign", "step", "contact_id", "cycle", "enrollment_id", "variant", "status",
               "consent_entry_id", "queued_at", "send_after"]  # fmt: skip
    statement = (
        dialect.insert(outbox).from_select(columns, recipients)
        .on_conflict_do_nothing(index_elements=["campaign", "step", "contact_id", "cycle"])
    )  # fmt: skip
    return inserted(connection, statement)
