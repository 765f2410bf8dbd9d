"""What a contact does (website events now; opens and clicks from the tracking endpoint):
recorded once, and applied to the lead score and the lifecycle stage as it happens, so
neither needs a scan of all contacts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.config import Settings
from mailer.contacts.events import record_event
from mailer.contacts.scoring import add_points
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
                 now: datetime) -> str | None:  # fmt: skip
    """Move the contact up to the highest stage whose rule holds (never down); the stage."""
    stages = settings.lifecycle.stages
    if not stages:
        return None
    current = connection.scalar(select(contacts.c.stage).where(contacts.c.id == contact_id))
    reached = stages.index(current) if current in stages else 0
    compiler = SegmentCompiler.for_settings(settings, now)
    for position in range(len(stages) - 1, reached, -1):
        rule = settings.lifecycle.rules.get(stages[position])
        condition = compiler.where(parse_segment(rule)) if rule else None
        if condition is not None and connection.scalar(
            select(contacts.c.id).where(contacts.c.id == contact_id, condition)
        ):
            reached = position
            break
    if stages[reached] != current:
        connection.execute(update(contacts).where(contacts.c.id == contact_id)
                           .values(stage=stages[reached]))  # fmt: skip
    return stages[reached]
