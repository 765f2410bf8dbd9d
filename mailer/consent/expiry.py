"""Consent that lapses: a list with `expires_after` holds a contact's consent that long after
the last grant or the person's last open or click of the list's mail (CASL's implied consent
runs two years); past that, the scheduler appends an `expired` entry and both gates stop.

What counts as activity: a grant or confirmation of the list (a form, a preference page, an
import: all are ledger entries), and the person's own opens and clicks of a campaign of the
list. Machine opens and clicks (image proxies, link scanners) and website events do not: they
say nothing about wanting this list's mail.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, case, func, select

from mailer.config import Settings
from mailer.consent.evidence import evidence
from mailer.consent.ledger import NewEntry
from mailer.consent.ledger_key import key_of
from mailer.consent.records import lock_ledger, record
from mailer.consent.state import SENDABLE
from mailer.contacts.addresses import address_hash
from mailer.store.tables import (
    consent_entries,
    consent_status,
    contacts,
    event_rollups,
    events,
    outbox,
)
from mailer.webhooks_out import WebhookEvent, enqueue

BATCH = 1000  # expiries written per list per tick: a first pass over an old list spreads out
PERSON = ("open", "click")  # event kinds of a person's own opens and clicks (not machine_*)


def expire_consent(connection: Connection, settings: Settings, now: datetime) -> int:
    """Append an `expired` entry for each contact whose consent on a list with
    `expires_after` is older than that, with no activity since; return how many.

    Idempotent across ticks and processes: the ledger's lock is taken before the statuses that
    decide are read, so a second pass at the same moment waits, then finds them expired. (Only
    when something lapsed: most ticks find nothing and leave the ledger to forms and clicks.)"""
    queries = {
        name: (spec.expires_after, _lapsed(name, _campaigns_of(settings, name),
                                           now - spec.expires_after))
        for name, spec in settings.lists.items()
        if spec.expires_after is not None
    }  # fmt: skip
    if not any(connection.execute(query.limit(1)).first() for _, query in queries.values()):
        return 0
    lock_ledger(connection)
    double_opt_in = {name: spec.double_opt_in for name, spec in settings.lists.items()}
    secret = key_of(connection).secret
    entries, lapsed = [], []
    for name, (bound, query) in queries.items():
        for row in connection.execute(query):
            proof = evidence(now, via="expiry", rule=f"expires_after {_spelled(bound)}",
                             last_grant=row.last_grant.isoformat(),
                             last_activity=(row.last_activity.isoformat()
                                            if row.last_activity else "none"))  # fmt: skip
            entries.append(NewEntry(address_hash(secret, row.email), row.contact_id, name,
                                    "expired", "scheduler", now, proof))  # fmt: skip
            lapsed.append(WebhookEvent(now, contact_id=row.contact_id, email=row.email,
                                       data={"list": name, "via": "expiry"}))  # fmt: skip
    record(connection, entries, double_opt_in, now)
    # A CRM that mirrors opt-outs hears that this list's mail stops, as of an unsubscribe.
    enqueue(connection, settings, "unsubscribed", lapsed)
    return len(entries)


def _campaigns_of(settings: Settings, list_name: str) -> list[str]:
    return [name for name, spec in settings.campaigns.items() if spec.list_name == list_name]


def _lapsed(list_name: str, campaigns: list[str], cutoff: datetime) -> Select[Any]:
    """The contacts whose sendable consent on `list_name` was last granted before `cutoff`
    and who opened or clicked none of `campaigns` since: one query, read from consent_status
    (only rows older than the cutoff), then each one's latest grant and activity by index."""
    last_grant = (
        select(func.max(consent_entries.c.occurred_at))
        .where(consent_entries.c.contact_id == consent_status.c.contact_id,
               consent_entries.c.purpose == list_name,
               consent_entries.c.action.in_(("granted", "confirmed")))
        .scalar_subquery()
    )  # fmt: skip
    raw = (
        select(func.max(events.c.occurred_at))
        .where(events.c.contact_id == consent_status.c.contact_id,
               events.c.kind.in_(PERSON), events.c.name.in_(campaigns))
        .scalar_subquery()
    )  # fmt: skip
    # Opens and clicks older than [retention] events_after live on as roll-ups (retention.py).
    rolled = (
        select(func.max(event_rollups.c.last_at))
        .join(outbox, outbox.c.id == event_rollups.c.outbox_id)
        .where(outbox.c.contact_id == consent_status.c.contact_id,
               event_rollups.c.kind.in_(PERSON), outbox.c.campaign.in_(campaigns))
        .scalar_subquery()
    )  # fmt: skip
    last_activity = case((rolled > raw, rolled), else_=func.coalesce(raw, rolled))
    stale = (
        select(consent_status.c.contact_id, contacts.c.email,
               func.coalesce(last_grant, consent_status.c.since).label("last_grant"),
               last_activity.label("last_activity"))
        .join(contacts, contacts.c.id == consent_status.c.contact_id)
        .where(consent_status.c.purpose == list_name,
               consent_status.c.status.in_(sorted(SENDABLE)),
               consent_status.c.since < cutoff)
        .subquery()
    )  # fmt: skip
    return (
        select(stale)
        .where(stale.c.last_grant < cutoff,
               (stale.c.last_activity.is_(None)) | (stale.c.last_activity < cutoff))
        .order_by(stale.c.contact_id)
        .limit(BATCH)
    )  # fmt: skip


def _spelled(bound: timedelta) -> str:
    """The bound as a marketer writes it: "730d" for whole days."""
    return f"{bound.days}d" if bound == timedelta(days=bound.days) else str(bound)
