"""A sequence's goal, decided in one place for the engine (at every tick) and for delivery (just
before a queued message goes out): a goal counts only what happened since the contact entered
this run of the sequence (`ever` in the goal reaches before)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    FromClause,
    Text,
    cast,
    column,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql

from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import SegmentError, parse_segment
from mailer.config import Settings
from mailer.errors import SettingsError
from mailer.store.bulk import one_of
from mailer.store.tables import UTCDateTime, contacts, enrollments
from mailer.webhooks_out import WebhookEvent, enqueue

ENDED = ("converted", "exited")  # a run already over is not converted again


def compiled(compiler: SegmentCompiler, source: str) -> ColumnElement[bool]:
    """A segment expression of settings (a goal, a condition) as SQL, or a SettingsError."""
    try:
        return compiler.where(parse_segment(source))
    except SegmentError as error:
        raise SettingsError(f"'{source}': {error}") from None


def reached_goal(connection: Connection, settings: Settings, goal: str,
                 enrollment_ids: Iterable[int], now: datetime,
                 runs: FromClause | None = None) -> set[int]:  # fmt: skip
    """The enrollments among `enrollment_ids` whose contact reached `goal` since entering this
    run (one query: each enrollment's own entered_at bounds its events, opens and clicks).
    With `runs` (unwritten_runs: enrollments decided before they are written), read from it
    instead of the enrollments table."""
    table = enrollments if runs is None else runs
    query = (select(table.c.id)
             .select_from(table.join(contacts, table.c.contact_id == contacts.c.id))
             .where(goal_condition(settings, goal, now, table)))  # fmt: skip
    if runs is None:
        query = query.where(one_of(connection, enrollments.c.id, enrollment_ids))
    return {row.id for row in connection.execute(query)}


def goal_condition(settings: Settings, goal: str, now: datetime,
                   runs: FromClause = enrollments) -> ColumnElement[bool]:  # fmt: skip
    """`goal` as SQL over `runs` joined to contacts: true for a run whose contact reached it
    since entering the run."""
    compiler = SegmentCompiler.for_settings(settings, now, entered=runs.c.entered_at,
                                            goal=True)  # fmt: skip
    return compiled(compiler, goal)


def unwritten_runs(connection: Connection, rows: Sequence[Any]) -> FromClause:
    """Enrollments not in the database yet (their id, contact_id and entered_at) as a table
    the goal query joins in place of `enrollments`: one JSON parameter, read by
    json_to_recordset on PostgreSQL and json_each on SQLite."""
    if connection.dialect.name == "postgresql":
        when = cache(datetime.isoformat)  # new runs share a few entry times (same instants)
        document = json.dumps([{"id": row.id, "contact_id": row.contact_id,
                                "entered_at": when(row.entered_at)}
                               for row in rows])  # fmt: skip
        typed = func.json_to_recordset(cast(literal(document, Text), postgresql.JSON))
        return typed.table_valued(
            column("id", BigInteger), column("contact_id", BigInteger),
            column("entered_at", DateTime(timezone=True)),
        ).render_derived("runs", with_types=True)  # fmt: skip
    # SQLite keeps times as text: written as UTCDateTime writes them, they compare as stored.
    as_text = UTCDateTime().bind_processor(connection.dialect)
    assert as_text is not None
    document = json.dumps([[row.id, row.contact_id, as_text(row.entered_at)] for row in rows])
    value: ColumnElement[Any] = literal_column("value")
    return (select(func.json_extract(value, "$[0]").label("id"),
                   func.json_extract(value, "$[1]").label("contact_id"),
                   type_coerce(func.json_extract(value, "$[2]"), UTCDateTime).label("entered_at"))
            .select_from(func.json_each(document)).subquery("runs"))  # fmt: skip


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
            .values(converted(goal, now))
            .returning(enrollments.c.id)
        )  # fmt: skip
    announce(connection, settings, {run: goals[run] for run in ended}, now)


def converted(goal: str, now: datetime) -> dict[str, Any]:
    """What a run that reached `goal` now has in its enrollment row."""
    return {"status": "converted", "ended_at": now, "due_at": None,
            "reason": f"goal reached: {goal}"}  # fmt: skip


def announce(connection: Connection, settings: Settings, goals: Mapping[int, str],
             now: datetime) -> None:  # fmt: skip
    """Queue a `converted` webhook for each run that `goals` says ended here."""
    reached = (WebhookEvent(now, enrollment_id=run, data={"goal": goal})
               for run, goal in goals.items())  # fmt: skip
    enqueue(connection, settings, "converted", reached)
