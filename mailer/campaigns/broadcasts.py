"""Broadcasts: one message, once, to the members of a list in a segment, at a set time, either
absolute (`2026-03-20T09:00Z`) or a local time in each contact's own zone
(`2026-03-20T09:00 local`). Queued with one INSERT ... SELECT per time zone: the database does
the work, so a million recipients never pass through Python's memory."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any, Literal

from sqlalchemy import Connection, String, and_, case, exists, func, literal, null, select
from sqlalchemy.dialects import postgresql, sqlite

from mailer.campaigns.ab_tests import decide_when_due, test_cutoff, test_point
from mailer.campaigns.broadcast_runs import (
    decide_zone,
    decisions,
    earlier_runs,
    find_run,
    finish_run,
    looked,
    run_is_over,
    start_run,
    why_held,
)
from mailer.campaigns.broadcast_state import (
    EVERY_ZONE,
    first_and_last,
    is_over,
    pending_zones,
    send_instants,
    what_it_sends,
    zones_due,
)
from mailer.campaigns.progress import zones_in_use
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.campaigns.send_time_tests import GROUP, first_group, groups_due, send_times
from mailer.campaigns.timing import variant_bounds, variant_key, variant_point
from mailer.config import Campaign, Settings
from mailer.delivery.pauses import pause, paused_campaigns, resume
from mailer.errors import SettingsError
from mailer.logs import logger
from mailer.send_times import send_at_key
from mailer.store.bulk import inserted
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
HELD = "held: "  # how a delivery pause set by a held broadcast begins (an operator's does not)
Part = Literal["all", "test", "rest"]  # of the recipients a queueing takes


def queue_broadcast(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                    now: datetime) -> int:  # fmt: skip
    """Queue the zones of the broadcast's run whose time has come; return how many messages
    were queued. Each zone is decided once, at its time: queued to who is in it then, or stale
    when found more than a day late. A run sends one version: while it is held (settings edited,
    send_at changed), nothing more is queued and its delivery is paused."""
    assert campaign.send_at is not None and campaign.segment is not None
    key = send_at_key(campaign.send_at)
    for other, earlier in earlier_runs(connection, name, key):
        if run_is_over(connection, settings, name, campaign, other, earlier, now):
            finish_run(connection, name, other, now)
    held = why_held(connection, settings, name, campaign, now)
    _hold_delivery(connection, settings, name, held, now)
    if held is not None:
        logger.error("broadcast held", extra={"campaign": name, "reason": held})
    run = find_run(connection, name, key)
    if run is None:
        if held is not None or now < first_and_last(campaign.send_at)[0]:
            return 0  # held by an earlier run, or scheduled
        run = start_run(connection, name, key, now, what_it_sends(settings, campaign))
    rest = 0
    if held is None:  # a send-time test's later groups; the winner `wait` after the test went
        rest = _queue_groups(connection, settings, name, campaign, key, run.cycle, now)
        rest += decide_when_due(connection, settings, name, campaign, key, run.cycle, now,
                                partial(_queue_rest, connection, settings, name, campaign,
                                        run.cycle, now))  # fmt: skip
    if not run.open:
        return rest  # done: this (name, send_at) was queued, or found stale
    zones = zones_in_use(connection, campaign.list_name, settings.default_timezone)
    instants = send_instants(campaign.send_at, zones)
    decided = {decision.zone for decision in decisions(connection, name, key)}
    queued = 0
    for zone, state in zones_due(instants, decided, run.seen_until, now).items():
        if state == "queued" and held is not None:
            continue  # waits, undecided, until the settings are restored (or it is stale)
        messages = 0
        if state == "queued" and send_times(campaign):  # a send-time test's first group
            messages = _queue_zone(connection, settings, name, campaign, zone, run.cycle, now,
                                   labels=first_group(campaign))  # fmt: skip
        elif state == "queued":
            part: Part = "test" if campaign.ab is not None else "all"
            messages = _queue_zone(connection, settings, name, campaign, zone, run.cycle, now,
                                   part)  # fmt: skip
        decide_zone(connection, name, key, zone, state, now, messages)
        decided.add(zone)
        queued += messages
    seen_until = run.seen_until
    if held is None:  # while held, the zones passing by are not passed: they wait
        seen_until = now
        looked(connection, name, key, now, what_it_sends(settings, campaign)
               if run.sends is None else None)  # fmt: skip
    if is_over(campaign.send_at, pending_zones(instants, decided, seen_until), now):
        finish_run(connection, name, key, now)
    return queued + rest


def _queue_rest(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                cycle: int, now: datetime, winner: str, went: datetime) -> int:  # fmt: skip
    """The rest of an A/B-tested broadcast, with the winner: who is in the list (since the test
    went at the latest) and the segment now, not queued already (the test's rows stay)."""
    return _queue_zone(connection, settings, name, campaign, EVERY_ZONE, cycle, now, "rest",
                       winner, went)  # fmt: skip


def _queue_groups(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                  key: str, cycle: int, now: datetime) -> int:  # fmt: skip
    """A send-time test's later groups whose time has come, each decided once: queued to its
    variant's recipients in the list and segment now, or stale when found a day late."""
    queued = 0
    for label, state in groups_due(connection, campaign, name, key, now).items():
        messages = 0
        if state == "queued":
            messages = _queue_zone(connection, settings, name, campaign, EVERY_ZONE, cycle, now,
                                   labels=[label])  # fmt: skip
        decide_zone(connection, name, key, GROUP + label, state, now, messages)
        queued += messages
    return queued


def _hold_delivery(connection: Connection, settings: Settings, name: str, held: str | None,
                   now: datetime) -> None:  # fmt: skip
    """Pause the delivery of a held broadcast (its queued messages would render the edited
    settings: two versions in one run); resume it once restored. An operator's pause stays."""
    reason = paused_campaigns(connection).get(name)
    if held is not None and reason is None:
        pause(connection, settings, name, HELD + held, now)
    elif held is None and reason is not None and reason.startswith(HELD):
        resume(connection, settings, name)


def _queue_zone(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                zone: str, cycle: int, now: datetime, part: Part = "all",
                winner: str | None = None, joined_by: datetime | None = None,
                labels: list[str] | None = None) -> int:  # fmt: skip
    """Queue the zone's recipients: all of them, the test fraction of an A/B test (each with
    its variant), or the rest (with the winner; those who joined by `joined_by`); only those
    whose variant is in `labels` when given (a send-time test's group)."""
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
    if zone != EVERY_ZONE:
        conditions.append(func.coalesce(contacts.c.timezone, settings.default_timezone) == zone)
    if part == "test":
        assert campaign.ab is not None and campaign.ab.test_fraction is not None
        conditions.append(test_point(contacts.c.id, name) < test_cutoff(campaign.ab.test_fraction))
    if joined_by is not None:
        conditions.append(exists().where(
            memberships.c.contact_id == contacts.c.id, memberships.c.list_id == lists.c.id,
            lists.c.name == campaign.list_name, memberships.c.joined_at <= joined_by))  # fmt: skip
    variant = _variant(name, campaign, contacts.c.id)
    if labels is not None:
        conditions.append(func.coalesce(variant, "A").in_(labels))
    if part == "rest":
        variant = literal(None if winner in (None, "A") else winner, String(32))
    recipients = (
        select(literal(name), literal(STEP), contacts.c.id, literal(cycle), literal("queued"),
               consent_status.c.entry_id, literal(now, UTCDateTime), literal(now, UTCDateTime),
               variant)
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
    return inserted(connection, statement)


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
