"""Enrollment: who enters a sequence, when, and when again. Triggers are read incrementally
where they can be: list and event triggers through a cursor per campaign (only what is new),
date triggers hourly, segment triggers whole (who is in the segment now)."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Select,
    exists,
    false,
    func,
    literal,
    null,
    select,
    text,
    union_all,
)

from mailer.campaigns.progress import (
    events_read,
    remember,
    remember_events,
    seen_until,
    zones_in_use,
)
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.campaigns.timing import day_window
from mailer.config import Campaign, Settings
from mailer.errors import SettingsError
from mailer.store.bulk import one_of
from mailer.store.tables import (
    WEBSITE_EVENT,
    UTCDateTime,
    contacts,
    enrollments,
    events,
    lists,
    memberships,
)
from mailer.store.upsert import insert_new

CURSOR_OVERLAP = timedelta(minutes=10)  # re-read: rows committed late with earlier times
_TRIGGER = re.compile(r'^\s*(joins list|enters segment|event|date)\s+"([^"]+)"\s*$')
YEARLY = timedelta(days=300)  # a date trigger (birthday, anniversary) fires once a year
DATE_TRIGGER_EVERY = timedelta(hours=1)
ENROLLMENT_KEYS = ("campaign", "contact_id", "cycle")


def parse_trigger(text: str) -> tuple[str, str]:
    """`joins list "newsletter"`, `enters segment "silent_90d"`, `event "cart_abandoned"`,
    `date "birthday"` (every year on that day in the contact's zone; the first step goes at
    its wall-clock time, see campaigns/date_steps.py)."""
    match = _TRIGGER.match(text)
    if match is None:
        raise SettingsError(f"trigger '{text}': write joins list \"NAME\", enters segment "
                            '"NAME", event "NAME" or date "ATTRIBUTE"')  # fmt: skip
    return match.group(1), match.group(2)


def enroll(
    connection: Connection, settings: Settings, name: str, campaign: Campaign, now: datetime
) -> int:
    """Enroll the contacts the trigger names and the re-entry policy allows; return how many.
    (The engine's tick enrolls through `enrollees`, queueing a first step due at once in the
    same statements: engine.py.)"""
    fresh = enrollees(connection, settings, name, campaign, now)
    insert_new(connection, enrollments, fresh, keys=ENROLLMENT_KEYS)
    return len(fresh)


def enrollees(
    connection: Connection, settings: Settings, name: str, campaign: Campaign, now: datetime
) -> list[dict[str, Any]]:
    """The enrollment rows (not written yet) of the contacts the trigger names and the
    re-entry policy allows; the trigger's cursor moves on.

    List and event triggers read only what is new since the last tick (a cursor, with some
    overlap for transactions that committed late), so a tick does not grow with the list.
    Event triggers follow recording order (the event id), so an event reported late still
    enrolls, within `[engine] late_events`.
    """
    assert campaign.trigger is not None
    kind, subject = parse_trigger(campaign.trigger)
    seen = seen_until(connection, name)
    since = seen - CURSOR_OVERLAP if seen is not None else None
    # A date trigger scans the whole list hourly (often enough to find "today"); between those
    # scans, each tick looks only at contacts imported or edited since the last one, so a
    # contact added at 20:10 on their birthday is found at once, not an hour later.
    changed_since = None
    if kind == "date" and seen is not None and now - seen < DATE_TRIGGER_EVERY:
        changed_since = seen - CURSOR_OVERLAP
    if seen is None and kind in ("joins list", "event") and not campaign.enroll_existing:
        # The sequence starts now: who joined the list (or did the event) before it existed
        # is not "joining" now. Importing an old list must not send it a welcome series.
        # (Stored ahead by the overlap, so the next read starts exactly at now.)
        if kind == "event":
            newest = _newest_event(connection)
            remember_events(connection, name, now, newest, newest)
        else:
            remember(connection, name, now + CURSOR_OVERLAP)
        return []
    if kind == "event":
        read_after, read_to = events_read(connection, name)
        newest = _newest_event(connection)  # first: what is recorded meanwhile waits a tick
        earliest = None if seen is None else earliest_occurrence(seen, settings.engine.late_events)
        query = event_candidates(campaign, subject, read_after or 0, newest, earliest)
        rows = connection.execute(_with_last_cycle(query, name)).all()
        remember_events(connection, name, now, newest if read_to is None else read_to, newest)
    else:
        query = _candidates(connection, settings, name, campaign, kind, subject, since, now,
                            changed_since)  # fmt: skip
        rows = connection.execute(_with_last_cycle(query, name)).all()
        if changed_since is None:  # the hourly scan is what the cursor remembers
            remember(connection, name, now)
    if not rows:
        return []
    # A contact enrolled before (each row ends with their last cycle): their runs, re-entry's.
    returning = [row.contact_id for row in rows if row.cycle is not None]
    history = _last_runs(connection, name, returning, now) if returning else {}
    first_delay = campaign.steps[0].delay if campaign.steps else timedelta(0)
    first = campaign.steps[0] if kind == "date" and campaign.steps else None
    fresh = []
    for contact_id, happened, *zone, _ in rows:  # a date trigger's rows have the contact's zone
        at = now if happened is None else happened
        previous = history.get(contact_id)
        if previous is not None and not _may_reenter(campaign, kind, previous, at, now):
            continue
        cycle = 0 if previous is None else previous.cycle + 1
        due = day_window(first, at, zone[0]).opens if first else None
        fresh.append({"campaign": name, "contact_id": contact_id, "cycle": cycle,
                      "status": "active", "entered_at": at, "last_position": -1,
                      "due_at": due or at + first_delay})  # fmt: skip
    return fresh


def _with_last_cycle(candidates: Select[Any], name: str) -> Select[Any]:
    """The trigger's rows, each followed by the contact's last cycle in sequence `name` (NULL
    for a first run): the candidates' ids do not go to the database and back, as they would
    for _last_runs of them all (mostly new contacts: 0.03 s of mailer's CPU for 50,000)."""
    found = candidates.subquery("found")
    last = (select(func.max(enrollments.c.cycle))
            .where(enrollments.c.campaign == name, enrollments.c.contact_id == found.c.contact_id)
            .scalar_subquery())  # fmt: skip
    return select(found, last.label("cycle"))


def _last_runs(connection: Connection, name: str, contact_ids: list[int],
               now: datetime) -> dict[int, Any]:  # fmt: skip
    """The runs of sequence `name` so far of each contact, as re-entry weighs them: the last
    cycle and entry, and the latest end (now while a run is active)."""
    return {
        row.contact_id: row
        for row in connection.execute(
            select(enrollments.c.contact_id, func.max(enrollments.c.cycle).label("cycle"),
                   func.max(enrollments.c.entered_at).label("entered_at"),
                   func.max(func.coalesce(enrollments.c.ended_at, literal(now, UTCDateTime)))
                   .label("ended_at"))
            .where(enrollments.c.campaign == name,
                   one_of(connection, enrollments.c.contact_id, contact_ids))
            .group_by(enrollments.c.contact_id))
    }  # fmt: skip


def enrollment_ids(connection: Connection, count: int) -> list[int]:
    """`count` new enrollment ids, ascending, for rows written with their ids: on PostgreSQL
    from the id column's own default (its sequence; `mailer plan`'s temporary copy of the table
    shares the live one's); on SQLite the ids after the largest (what SQLite itself would
    give: the write transaction began IMMEDIATE, so no other process writes meanwhile)."""
    if connection.dialect.name == "postgresql":
        default = connection.scalar(text(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
            "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
            "WHERE d.adrelid = 'enrollments'::regclass AND a.attname = 'id'"))  # fmt: skip
        if not isinstance(default, str) or not default.startswith("nextval("):
            raise RuntimeError(f"enrollments.id has no sequence for its default ({default})")
        # One array, not a row per id: a tenth of the client's CPU for 50,000 ids.
        allocated = connection.scalar(
            text(f"SELECT array_agg(id ORDER BY id) FROM (SELECT {default} AS id "
                 "FROM generate_series(1, :count)) AS allocated"), {"count": count}
        )  # fmt: skip
        return list(map(int, allocated or []))
    largest = int(connection.scalar(select(func.coalesce(func.max(enrollments.c.id), 0))) or 0)
    return list(range(largest + 1, largest + 1 + count))


def _candidates(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                kind: str, subject: str, since: datetime | None, now: datetime,
                changed_since: datetime | None = None) -> Select[Any]:  # fmt: skip
    """(contact_id, at): who the trigger names, and when it happened (None: now)."""
    if kind == "joins list":
        query = (select(memberships.c.contact_id, memberships.c.joined_at.label("at"))
                 .join(lists, lists.c.id == memberships.c.list_id)
                 .where(lists.c.name == subject))  # fmt: skip
        return query.where(memberships.c.joined_at > since) if since else query
    member = _member_of(campaign)
    if kind == "date":
        return _anniversaries(connection, settings, name, campaign, subject, member, now,
                              changed_since)  # fmt: skip
    if subject not in settings.segments:
        raise SettingsError(f"campaigns.{name}.trigger: no segment '{subject}'")
    # A segment is evaluated whole on every tick (who is in it now).
    condition = SegmentCompiler.for_settings(settings, now).where(
        parse_segment(settings.segments[subject])
    )
    return select(contacts.c.id.label("contact_id"), null().label("at")).where(
        condition, member.where(memberships.c.contact_id == contacts.c.id)
    )


def earliest_occurrence(previous_tick: datetime, late_events: timedelta) -> datetime:
    """The oldest `occurred_at` an event read now may have and still enroll. An event read
    now was recorded after the tick before (the earliest it can have been recorded), so the
    bound counts from that tick: a daemon stopped for a while still enrolls what was
    reported on time meanwhile."""
    return previous_tick - late_events


def event_candidates(campaign: Campaign, name: str, read_after: int, read_to: int,
                     earliest: datetime | None) -> Select[Any]:  # fmt: skip
    """(contact_id, at): list members with a website event `name` recorded in the id range
    (read_after, read_to] that happened at `earliest` or later. Indexed by (kind, name, id), for
    website events only (`WEBSITE_EVENT`): a tick reads the new events, never all of them."""
    lateness = [] if earliest is None else [events.c.occurred_at >= earliest]
    return (select(events.c.contact_id, func.max(events.c.occurred_at).label("at"))
            .where(WEBSITE_EVENT, events.c.name == name,
                   events.c.id > read_after, events.c.id <= read_to, *lateness,
                   _member_of(campaign).where(memberships.c.contact_id == events.c.contact_id))
            .group_by(events.c.contact_id))  # fmt: skip


def _newest_event(connection: Connection) -> int:
    return int(connection.scalar(select(func.coalesce(func.max(events.c.id), 0))) or 0)


def _member_of(campaign: Campaign) -> Any:
    return exists().where(memberships.c.list_id == lists.c.id,
                          lists.c.name == campaign.list_name)  # fmt: skip


def _anniversaries(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                   attribute: str, member: Any, now: datetime,
                   changed_since: datetime | None) -> Select[Any]:  # fmt: skip
    """Contacts whose date `attribute` falls today in their own zone (a year or more ago), with
    their local midnight and zone: one query, a branch per time zone in use. 29 February is
    celebrated on the 28th in other years. With `changed_since`, only contacts changed since."""
    if settings.attributes.get(attribute) not in ("date", "datetime"):
        raise SettingsError(f"campaigns.{name}.trigger: declare {attribute} in [attributes] as "
                            '"date" to trigger on it')  # fmt: skip
    value = contacts.c.attributes[attribute].as_string()
    zone_of = func.coalesce(contacts.c.timezone, settings.default_timezone)
    branches = []
    for zone in zones_in_use(connection, campaign.list_name, settings.default_timezone):
        today = now.astimezone(ZoneInfo(zone)).date()
        days = [today.strftime("%m-%d")]
        if today.month == 2 and today.day == 28 and not calendar.isleap(today.year):
            days.append("02-29")
        midnight = datetime.combine(today, time(), tzinfo=ZoneInfo(zone)).astimezone(UTC)
        in_list = member.where(memberships.c.contact_id == contacts.c.id)
        branch = (select(contacts.c.id.label("contact_id"),
                         literal(midnight, UTCDateTime).label("at"), zone_of.label("zone"))
                  .where(zone_of == zone, func.substr(value, 6, 5).in_(days),
                         func.substr(value, 1, 4) < str(today.year), in_list))  # fmt: skip
        if changed_since is not None:
            branch = branch.where(contacts.c.updated_at > changed_since)
        branches.append(branch)
    if not branches:  # no contacts yet
        return select(contacts.c.id.label("contact_id"), null().label("at")).where(false())
    combined = union_all(*branches).subquery()
    return select(combined.c.contact_id, combined.c.at, combined.c.zone)


def _may_reenter(campaign: Campaign, kind: str, previous: Any, at: datetime,
                 now: datetime) -> bool:  # fmt: skip
    """Whether a contact enrolled before may enroll again, by the sequence's re-entry policy:
    never, or once the last enrollment ended that long ago, on a trigger newer than it. A date
    trigger comes back every year by nature."""
    if kind == "date":
        return bool(previous.entered_at + YEARLY <= at)
    if campaign.reentry == "never":
        return False
    still_active = previous.ended_at >= now  # coalesce(ended_at, now): no end yet
    assert isinstance(campaign.reentry, timedelta)
    return (not still_active and previous.ended_at + campaign.reentry <= now
            and at > previous.entered_at)  # fmt: skip
