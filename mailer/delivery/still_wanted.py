"""Is a queued message still wanted? Asked just before sending, beside consent gate 2.

A message may wait in the outbox for hours or days (a paused campaign, a relay that said "try
later"), and meanwhile the contact may have bought what the cart reminder is about. So, for
each chunk about to go out, one query per campaign asks again what the engine asked when it
queued the message: has the sequence's goal been reached this run, has the enrollment ended,
does the step's condition still hold, is the broadcast's contact still in its segment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Connection, Select, and_, select, update
from sqlalchemy.exc import DBAPIError

from mailer.campaigns.goals import compiled, convert, goal_condition
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.config import Campaign, Settings
from mailer.delivery.claims import OutboxMessage
from mailer.errors import SettingsError
from mailer.logs import logger
from mailer.returns.replied import EXITED_REPLIED, replied
from mailer.store.bulk import listed, one_of, one_of_given
from mailer.store.tables import contacts, enrollments, outbox

ENDED = ("converted", "exited")  # "completed" is not: its last message is still wanted


@dataclass(frozen=True)
class Branch:
    """A false condition at sending: the enrollment goes on as the engine's skip takes it, from
    `last_step` (the step before `otherwise`, or the skipped step), the next step's delay
    counted from now."""

    skipped_step: str
    last_step: str
    last_position: int
    delay: timedelta  # of the step it goes to


@dataclass
class Recheck:
    """What the recheck found for a chunk; messages in none of its maps are still wanted."""

    skipped: dict[int, str] = field(default_factory=dict)  # outbox id -> why not wanted
    failed: dict[int, str] = field(default_factory=dict)  # outbox id -> why it could not ask
    converted: dict[int, str] = field(default_factory=dict)  # enrollment id -> goal reached
    branched: dict[int, Branch] = field(default_factory=dict)  # enrollment id -> where next

    def add(self, other: Recheck) -> None:
        self.skipped |= other.skipped
        self.failed |= other.failed
        self.converted |= other.converted
        self.branched |= other.branched

    @property
    def answered(self) -> set[int]:
        """The outbox ids that end here (skipped) or wait (failed): not to be sent now."""
        return set(self.skipped) | set(self.failed)


def recheck(connection: Connection, settings: Settings, messages: Iterable[OutboxMessage],
            now: datetime) -> Recheck:  # fmt: skip
    """Recheck `messages`, campaign by campaign: a campaign whose goal, condition or segment
    cannot be compiled (or whose query fails) holds back only its own messages."""
    found = Recheck()
    by_campaign: dict[str, list[OutboxMessage]] = defaultdict(list)
    for message in messages:
        by_campaign[message.campaign].append(message)
    for name, group in by_campaign.items():
        campaign = settings.campaigns.get(name)
        if campaign is None:
            found.skipped.update((m.id, "the campaign is no longer in settings") for m in group)
            continue
        part = Recheck()  # kept only whole: a campaign that fails halfway decides nothing
        try:
            if campaign.kind == "broadcast":
                _broadcast(connection, settings, campaign, group, now, part)
            else:
                _sequence(connection, settings, name, campaign, group, now, part)
            found.add(part)
        except SettingsError as error:  # a goal, condition or segment edited into an error
            logger.error(
                "recheck at sending failed", extra={"campaign": name, "reason": str(error)}
            )
            found.failed.update((m.id, f"cannot recheck {name}: {error}") for m in group)
        except Exception as error:
            if isinstance(error, DBAPIError) and error.connection_invalidated:
                raise  # the server went away: the worker gives its rows back and reconnects
            # Only reads: rolling back loses nothing and lets PostgreSQL answer the next query.
            connection.rollback()
            logger.exception("recheck at sending failed", extra={"campaign": name})
            problem = type(error).__name__
            found.failed.update((m.id, f"cannot recheck {name}: {problem}") for m in group)
    return found


def _broadcast(connection: Connection, settings: Settings, campaign: Campaign,
               group: list[OutboxMessage], now: datetime, found: Recheck) -> None:  # fmt: skip
    """The same segment query as at queueing (broadcasts.py), for this chunk's contacts."""
    segment = campaign.segment or ""
    if segment not in settings.segments:
        raise SettingsError(f"no segment '{segment}'")
    in_segment = compiled(SegmentCompiler.for_settings(settings, now), settings.segments[segment])
    still = set(connection.scalars(select(contacts.c.id).where(
        one_of(connection, contacts.c.id, [m.contact_id for m in group]), in_segment)))  # fmt: skip
    found.skipped.update((m.id, f"no longer in segment {segment}")
                         for m in group if m.contact_id not in still)  # fmt: skip


def _sequence(connection: Connection, settings: Settings, name: str, campaign: Campaign,
              group: list[OutboxMessage], now: datetime, found: Recheck) -> None:  # fmt: skip
    if campaign.goal:  # read with the enrollments: one statement, not two
        runs = _enrollments_and_goal(connection, settings, campaign.goal, group, now)
    else:
        runs = _enrollments(connection, group)
    going: list[tuple[OutboxMessage, Any]] = []  # with an enrollment that has not ended
    for message in group:
        run = runs.get(message.id)
        if run is None:  # its enrollment is gone: consent (gate 2) is all there is to ask
            continue
        if run.status in ENDED:
            found.skipped[message.id] = f"the sequence ended ({run.status}: {run.reason})"
        elif campaign.goal and run.reached:
            found.skipped[message.id] = f"goal reached ({campaign.goal})"
            found.converted[run.id] = campaign.goal
        else:
            going.append((message, run))
    if campaign.exit_on_reply and going:  # the engine ends the run at its next tick
        answered = replied(connection, settings, name, {run.id for _, run in going}, now)
        for message, run in going:
            if run.id in answered:
                found.skipped[message.id] = f"the contact {EXITED_REPLIED} (exit_on_reply)"
        going = [(message, run) for message, run in going if run.id not in answered]
    _conditions(connection, settings, name, campaign, going, now, found)


def _enrollments(connection: Connection, group: list[OutboxMessage]) -> dict[int, Any]:
    """Each message's enrollment as it is now, by outbox id."""
    dialect = connection.dialect.name
    rows = connection.execute(_enrollments_query(dialect),
                              {"ids": listed(dialect, [m.id for m in group])})  # fmt: skip
    return {row.outbox_id: row for row in rows}


def _enrollments_and_goal(connection: Connection, settings: Settings, goal: str,
                          group: list[OutboxMessage], now: datetime) -> dict[int, Any]:  # fmt: skip
    """`_enrollments`, each with `reached`: whether its contact reached `goal` since entering
    the run (reached_goal's question, asked of the same rows)."""
    # Outer join: a run whose contact is gone is still a run, and reaches no goal.
    reached = and_(contacts.c.id.is_not(None), goal_condition(settings, goal, now))
    rows = connection.execute(
        select(outbox.c.id.label("outbox_id"), enrollments.c.id, enrollments.c.status,
               enrollments.c.reason, reached.label("reached"))
        .select_from(outbox.join(enrollments, enrollments.c.id == outbox.c.enrollment_id)
                     .outerjoin(contacts, contacts.c.id == enrollments.c.contact_id))
        .where(one_of(connection, outbox.c.id, [m.id for m in group]))
    )  # fmt: skip
    return {row.outbox_id: row for row in rows}


@cache
def _enrollments_query(dialect: str) -> Select[Any]:
    """Built once: the recheck asks it for every chunk."""
    return (
        select(outbox.c.id.label("outbox_id"), enrollments.c.id, enrollments.c.status,
               enrollments.c.reason)
        .join(enrollments, enrollments.c.id == outbox.c.enrollment_id)
        .where(one_of_given(dialect, outbox.c.id, "ids"))
    )  # fmt: skip


def _conditions(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                going: list[tuple[OutboxMessage, Any]], now: datetime,
                found: Recheck) -> None:  # fmt: skip
    """A step's condition, as the engine's `_holds` reads it (`previous` this run), once per
    step for the chunk; a false one skips the message and takes the engine's branch."""
    names = [step.name for step in campaign.steps]
    by_step: dict[str, list[tuple[OutboxMessage, Any]]] = defaultdict(list)
    for message, run in going:
        by_step[message.step].append((message, run))
    for step_name, rows in by_step.items():
        if step_name not in names:
            continue  # a step removed from settings: no condition to ask again
        position = names.index(step_name)
        step = campaign.steps[position]
        if step.condition is None:
            continue
        previous = (name, names[position - 1]) if position > 0 else None
        compiler = SegmentCompiler.for_settings(settings, now, previous,
                                                entered=enrollments.c.entered_at)  # fmt: skip
        holds = set(connection.scalars(
            select(enrollments.c.id)
            .select_from(enrollments.join(contacts, enrollments.c.contact_id == contacts.c.id))
            .where(one_of(connection, enrollments.c.id, [run.id for _, run in rows]),
                   compiled(compiler, step.condition))
        ))  # fmt: skip
        target = campaign.after_skip(position)
        delay = campaign.steps[target].delay if target < len(names) else timedelta(0)
        for message, run in rows:
            if run.id not in holds:
                found.skipped[message.id] = f"condition: {step.condition}"
                found.branched[run.id] = Branch(step_name, names[target - 1], target - 1, delay)


def follow_up(connection: Connection, settings: Settings, found: Recheck, now: datetime) -> None:
    """Write what the recheck changes for enrollments, as the engine's next tick would: a goal
    reached ends the run converted (no later step queues); a false condition moves it on."""
    convert(connection, settings, found.converted, now)
    for enrollment_id, branch in found.branched.items():
        if enrollment_id in found.converted:
            continue
        # Only while the run still stands at the skipped step: if a later step was queued
        # meanwhile (a long pause), the engine has already moved on.
        connection.execute(
            update(enrollments)
            .where(enrollments.c.id == enrollment_id, enrollments.c.status == "active",
                   enrollments.c.last_step == branch.skipped_step)
            .values(last_step=branch.last_step, last_position=branch.last_position,
                    last_step_at=now, due_at=now + branch.delay, reason=None)
        )  # fmt: skip
