"""Broadcasts: one message, once, to the members of a list in a segment, at a set time, either
absolute (`2026-03-20T09:00Z`) or a local time in each contact's own zone
(`2026-03-20T09:00 local`). Queued with one INSERT ... SELECT per time zone: the database does
the work, so a million recipients never pass through Python's memory."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, literal, null, select
from sqlalchemy.dialects import postgresql, sqlite

from mailer.campaigns.broadcast_runs import find_run, finish_run, start_run
from mailer.campaigns.broadcast_state import is_stale, send_instants
from mailer.campaigns.progress import zones_in_use
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.campaigns.timing import variant_bounds, variant_key, variant_point
from mailer.config import Campaign, Settings
from mailer.errors import SettingsError
from mailer.send_times import send_at_key
from mailer.store.tables import (
    UTCDateTime,
    consent_status,
    contacts,
    lists,
    memberships,
    outbox,
    suppressions,
)

STEP = "broadcast"


def queue_broadcast(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                    now: datetime) -> int:  # fmt: skip
    """Queue what is due of the broadcast's run for its send_at; return how many messages were
    queued. A run, once queued or stale, is done; a new send_at is a new run."""
    assert campaign.send_at is not None and campaign.segment is not None
    key = send_at_key(campaign.send_at)
    run = find_run(connection, name, key)
    if run is not None and run.state != "sending":
        return 0  # done: this (name, send_at) was queued, or found stale
    zones = zones_in_use(connection, campaign.list_name, settings.default_timezone)
    instants = send_instants(campaign.send_at, zones)
    if not instants:
        return 0  # the list has no members yet: nothing decided, members may still come
    if is_stale(instants, now):
        if run is None:
            start_run(connection, name, key, "stale", now)  # a stale broadcast is never sent
        else:
            finish_run(connection, name, key, "stale", now)
        return 0
    if run is None:
        if min(instants.values()) > now:
            return 0  # scheduled
        run = start_run(connection, name, key, "sending", now)
    queued = 0
    for zone, instant in instants.items():
        if instant <= now:
            queued += _queue_zone(connection, settings, name, campaign, zone, run.cycle, now)
    if all(instant <= now for instant in instants.values()):
        finish_run(connection, name, key, "queued", now)
    return queued


def _queue_zone(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                zone: str | None, cycle: int, now: datetime) -> int:  # fmt: skip
    assert campaign.segment is not None
    if campaign.segment not in settings.segments:
        raise SettingsError(f"campaigns.{name}.segment: no segment '{campaign.segment}'")
    in_segment = SegmentCompiler.for_settings(settings, now).where(
        parse_segment(settings.segments[campaign.segment])
    )
    conditions = [
        exists().where(memberships.c.contact_id == contacts.c.id,
                       memberships.c.list_id == lists.c.id, lists.c.name == campaign.list_name),
        consent_status.c.status.in_(("granted", "confirmed")),  # consent gate 1
        ~exists().where(suppressions.c.email == contacts.c.email),
        in_segment,
    ]  # fmt: skip
    if zone is not None:
        conditions.append(func.coalesce(contacts.c.timezone, settings.default_timezone) == zone)
    recipients = (
        select(literal(name), literal(STEP), contacts.c.id, literal(cycle), literal("queued"),
               consent_status.c.entry_id, literal(now, UTCDateTime), literal(now, UTCDateTime),
               _variant(name, campaign, contacts.c.id))
        .join(consent_status, and_(consent_status.c.contact_id == contacts.c.id,
                                   consent_status.c.purpose == campaign.list_name))
        .where(*conditions)
    )  # fmt: skip
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(outbox)
        .from_select(
            [
                "campaign",
                "step",
                "contact_id",
                "cycle",
                "status",
                "consent_entry_id",
                "queued_at",
                "send_after",
                "variant",
            ],
            recipients,
        )
        .on_conflict_do_nothing(index_elements=["campaign", "step", "contact_id", "cycle"])
    )
    return int(connection.execute(statement).rowcount or 0)


def _variant(name: str, campaign: Campaign, contact_id: Any) -> Any:
    """timing.pick_variant, in SQL: the same contact gets the same variant either way."""
    if not campaign.variants:
        return null()
    weights = {"A": 1, **{label: v.weight for label, v in campaign.variants.items()}}
    total = sum(weights.values())
    point = variant_point(contact_id, variant_key(name, STEP))
    cases = [(point * total < upper, None if label == "A" else label)
             for label, upper in variant_bounds(weights)]  # fmt: skip
    return case(*cases, else_=null())
