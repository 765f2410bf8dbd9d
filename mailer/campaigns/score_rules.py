"""Score rules: points a contact earns once, when they first match a segment expression
(`'orders >= 3' = 10`). Each tick looks only at contacts changed since the last one (an index
on contacts.updated_at), and records the award as an event so it is never given twice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, exists, insert, select

from mailer.campaigns.progress import remember, seen_until
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.config import Settings
from mailer.contacts.scoring import add_points
from mailer.store.tables import contacts, events

CURSOR = "(score rules)"  # a row of trigger_cursors, beside the campaigns'


def award_rules(connection: Connection, settings: Settings, now: datetime) -> int:
    """Award the rules' points to contacts changed since the last tick; return how many."""
    rules = settings.scoring.rules
    if not rules:
        return 0
    seen = seen_until(connection, CURSOR)
    compiler = SegmentCompiler.for_settings(settings, now)
    awarded = 0
    for rule, points in rules.items():
        name = f"rule: {rule}"
        already = exists().where(events.c.contact_id == contacts.c.id, events.c.kind == "rule",
                                 events.c.name == name)  # fmt: skip
        query = select(contacts.c.id).where(compiler.where(parse_segment(rule)), ~already)
        if seen is not None:
            query = query.where(contacts.c.updated_at >= seen)
        for (contact_id,) in connection.execute(query).all():
            connection.execute(insert(events).values(
                contact_id=contact_id, kind="rule", name=name, step=None, properties={},
                occurred_at=now))  # fmt: skip
            add_points(connection, contact_id, points, now, settings.scoring.half_life)
            awarded += 1
    remember(connection, CURSOR, now)
    return awarded
