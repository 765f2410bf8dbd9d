"""What a contact does (website events now; opens and clicks from the tracking endpoint):
recorded once, and applied to the lead score and the lifecycle stage as it happens, so
neither needs a scan of all contacts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.config import Settings
from mailer.contacts.events import record_event
from mailer.contacts.scoring import add_points
from mailer.store.bulk import one_of
from mailer.store.locking import picked_in_order
from mailer.store.tables import contacts


def record_activity(connection: Connection, settings: Settings, email: str, name: str,
                    at: datetime, properties: Mapping[str, Any] | None = None) -> int:  # fmt: skip
    """Record a website event, score it, move the stage up if a rule now holds."""
    event_id, contact_id = record_event(connection, email, name, at, properties)
    scoring = settings.scoring
    add_points(connection, contact_id, scoring.points.get(name, 0.0), at, scoring.half_life)
    update_stage(connection, settings, contact_id, at)
    return event_id


def update_stage(connection: Connection, settings: Settings, contact_id: int,
                 now: datetime) -> None:  # fmt: skip
    """Move the contact up to the highest stage whose rule holds (never down)."""
    update_stages(connection, settings, [contact_id], now)


def update_stages(connection: Connection, settings: Settings, contact_ids: Iterable[int],
                  now: datetime) -> None:  # fmt: skip
    """Move each contact up to the highest stage whose rule holds (never down; a contact
    without a stage gets the first): one query per stage rule, not per contact."""
    stages = settings.lifecycle.stages
    ids = list(set(contact_ids))
    if not stages or not ids:
        return
    rows = connection.execute(select(contacts.c.id, contacts.c.stage)
                              .where(one_of(connection, contacts.c.id, ids)))  # fmt: skip
    held = {row.id: row.stage for row in rows}
    reached = {i: stages.index(stage) if stage in stages else 0 for i, stage in held.items()}
    compiler = SegmentCompiler.for_settings(settings, now)
    for position in range(len(stages) - 1, 0, -1):
        rule = settings.lifecycle.rules.get(stages[position])
        below = [i for i, at in reached.items() if at < position]
        if not rule or not below:
            continue
        condition = compiler.where(parse_segment(rule))
        for row in connection.execute(select(contacts.c.id).where(
                one_of(connection, contacts.c.id, below), condition)):  # fmt: skip
            reached[row.id] = position
    moved: dict[int, list[int]] = {}
    for contact_id, position in reached.items():
        if stages[position] != held[contact_id]:  # a new contact gets the first stage too
            moved.setdefault(position, []).append(contact_id)
    for position, moving in moved.items():
        connection.execute(update(contacts).where(one_of(connection, contacts.c.id, moving))
                           .values(stage=stages[position]))  # fmt: skip


def advance_stages(connection: Connection, settings: Settings, now: datetime,
                   among: ColumnElement[bool] | None = None) -> int:  # fmt: skip
    """Move contacts (`among` them, default every one) up to the highest stage whose rule now
    holds, also where no event of theirs came to move it (a rule on time passing, a tag, an
    import); one UPDATE per stage rule, highest first. Return how many contacts moved."""
    stages = settings.lifecycle.stages
    compiler = SegmentCompiler.for_settings(settings, now)
    moved = 0
    for position in range(len(stages) - 1, 0, -1):
        rule = settings.lifecycle.rules.get(stages[position])
        if not rule:
            continue
        below = or_(contacts.c.stage.is_(None), contacts.c.stage.not_in(stages[position:]))
        holds = compiler.where(parse_segment(rule))
        if among is not None:
            holds = and_(holds, among)
        # Locked in id order, as /events and the pixel writer lock theirs: two daemons'
        # transactions then wait for each other instead of deadlocking.
        picked = picked_in_order(connection, contacts, and_(below, holds))
        result = connection.execute(update(contacts).where(picked).values(stage=stages[position]))
        moved += result.rowcount
    return moved
