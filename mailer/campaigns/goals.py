"""A sequence's goal, decided in one place for the engine (at every tick) and for delivery (just
before a queued message goes out): a goal counts only what happened since the contact entered
this run of the sequence (`ever` in the goal reaches before)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, select, update

from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import SegmentError, parse_segment
from mailer.config import Settings
from mailer.errors import SettingsError
from mailer.store.bulk import one_of
from mailer.store.tables import contacts, enrollments
from mailer.webhooks_out import WebhookEvent, enqueue

ENDED = ("converted", "exited")  # a run already over is not converted again


def compiled(compiler: SegmentCompiler, source: str) -> ColumnElement[bool]:
    """A segment expression of settings (a goal, a condition) as SQL, or a SettingsError."""
    try:
        return compiler.where(parse_segment(source))
    except SegmentError as error:
        raise SettingsError(f"'{source}': {error}") from None


def reached_goal(connection: Connection, settings: Settings, goal: str,
                 enrollment_ids: Iterable[int], now: datetime) -> set[int]:  # fmt: skip
    """The enrollments among `enrollment_ids` whose contact reached `goal` since entering this
    run (one query: each enrollment's own entered_at bounds its events, opens and clicks)."""
    compiler = SegmentCompiler.for_settings(settings, now, entered=enrollments.c.entered_at,
                                            goal=True)  # fmt: skip
    matching = connection.execute(
        select(enrollments.c.id)
        .select_from(enrollments.join(contacts, enrollments.c.contact_id == contacts.c.id))
        .where(one_of(connection, enrollments.c.id, enrollment_ids), compiled(compiler, goal))
    )  # fmt: skip
    return {row.id for row in matching}


def convert(connection: Connection, settings: Settings, goals: Mapping[int, str],
            now: datetime) -> None:  # fmt: skip
    """End the runs `goals` names (enrollment id -> the goal reached) converted, unless they
    ended already, and queue a `converted` webhook for each that ends here (the engine at its
    tick, delivery at its recheck: whichever comes first)."""
    ended: list[int] = []
    for enrollment_id, goal in goals.items():
        ended += connection.scalars(
            update(enrollments)
            .where(enrollments.c.id == enrollment_id, enrollments.c.status.not_in(ENDED))
            .values(status="converted", ended_at=now, due_at=None, reason=f"goal reached: {goal}")
            .returning(enrollments.c.id)
        )  # fmt: skip
    reached = (WebhookEvent(now, enrollment_id=run, data={"goal": goals[run]}) for run in ended)
    enqueue(connection, settings, "converted", reached)
