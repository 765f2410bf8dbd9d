"""Score rules: points a contact earns once, when they first match a segment expression
(`'orders >= 3' = 10`). Each tick looks at the contacts changed since the last one (their row,
or an event of theirs), and once an hour at every contact, so a rule that comes to hold without
either (a tag, time passing, an event reported late) is awarded within the hour, and a tick stays
proportional to what changed. The award is a row of awarded_rules, inserted with ON CONFLICT DO
NOTHING: when two ticks overlap (two daemons, `tick` beside `run`), only the one whose row went
in adds the points."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    exists,
    func,
    insert,
    literal,
    select,
    true,
    union,
)
from sqlalchemy.dialects import postgresql, sqlite

from mailer.campaigns.activity import advance_stages
from mailer.campaigns.progress import events_read, remember, remember_events, seen_until
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.config import Settings
from mailer.contacts.scoring import add_points_many
from mailer.store.tables import awarded_rules, contacts, events

CURSOR = "(score rules)"  # rows of trigger_cursors, beside the campaigns': the last tick,
FULL_PASS = "(score rules, every contact)"  # and the last look at every contact
FULL_PASS_EVERY = timedelta(hours=1)


def award_rules(connection: Connection, settings: Settings, now: datetime) -> int:
    """Award each rule's points to the contacts it now holds for, then move lifecycle stages
    (which the points may feed); return how many awards."""
    rules = settings.scoring.rules
    compiler = SegmentCompiler.for_settings(settings, now)
    changed = _changed_since(connection, now)
    awarded = 0
    for rule, points in rules.items():
        holds = and_(compiler.where(parse_segment(rule)), changed)
        fresh = award(connection, rule, holds, now)
        if fresh:
            connection.execute(insert(events), [
                {"contact_id": contact_id, "kind": "rule", "name": f"rule: {rule}", "step": None,
                 "properties": {}, "occurred_at": now} for contact_id in fresh])  # fmt: skip
            add_points_many(connection, dict.fromkeys(fresh, points), now,
                            settings.scoring.half_life)  # fmt: skip
        awarded += len(fresh)
    advance_stages(connection, settings, now, changed)
    return awarded


def _changed_since(connection: Connection, now: datetime) -> ColumnElement[bool]:
    """Which contacts this tick's rules look at: those whose row changed or who had an event
    recorded since the last tick (the updated_at index, the events' primary key); every contact
    when the last full pass is FULL_PASS_EVERY old."""
    seen, full = seen_until(connection, CURSOR), seen_until(connection, FULL_PASS)
    _, read_to = events_read(connection, CURSOR)
    newest = connection.scalar(select(func.max(events.c.id))) or 0
    remember_events(connection, CURSOR, now, read_to or 0, newest)
    if seen is None or read_to is None or full is None or now - full >= FULL_PASS_EVERY:
        remember(connection, FULL_PASS, now)
        return true()
    changed = union(select(contacts.c.id).where(contacts.c.updated_at >= seen),
                    select(events.c.contact_id).where(events.c.id > read_to))  # fmt: skip
    return contacts.c.id.in_(changed)


def award(
    connection: Connection, rule: str, holds: ColumnElement[bool], now: datetime
) -> list[int]:
    """Insert (contact, rule) for every contact `holds` is true for and that has no such row;
    return the contacts whose row this call inserted. A row another transaction is inserting
    at the same time makes this one wait, then skip it (PostgreSQL's ON CONFLICT)."""
    already = exists().where(awarded_rules.c.contact_id == contacts.c.id,
                             awarded_rules.c.rule == rule)  # fmt: skip
    candidates = select(contacts.c.id, literal(rule), literal(now, awarded_rules.c.awarded_at.type)
                        ).where(holds, ~already)  # fmt: skip
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(awarded_rules)
                 .from_select(["contact_id", "rule", "awarded_at"], candidates)
                 .on_conflict_do_nothing(index_elements=["contact_id", "rule"])
                 .returning(awarded_rules.c.contact_id))  # fmt: skip
    return [row.contact_id for row in connection.execute(statement)]
