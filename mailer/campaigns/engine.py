"""One tick of the campaign engine: enroll contacts into sequences, then advance the due
enrollments into outbox rows. The database is the truth: a tick is a function of (settings,
database, now), so running it twice, or in two processes at once, queues nothing twice (the
outbox is unique per campaign, step, contact and cycle) and a restart forgets nothing.

Consent gate 1 is here: a message is queued only while the contact's consent for the
campaign's list is granted or confirmed and the address is not suppressed. (Gate 2, just before
SMTP, belongs to delivery.)
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    FromClause,
    func,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from mailer.campaigns.broadcasts import queue_broadcast
from mailer.campaigns.cap_queue import CAPPED, ON_THE_WAY, Waiting, first_in_line
from mailer.campaigns.date_steps import date_triggered, past_its_day
from mailer.campaigns.due_writes import MESSAGE_KEYS, DueWrites, HeldWrites
from mailer.campaigns.enrollment import ENROLLMENT_KEYS, enrollees, enrollment_ids
from mailer.campaigns.goals import announce, compiled, reached_goal, unwritten_runs
from mailer.campaigns.resends import queue_resends
from mailer.campaigns.rhythm import LOOK_AGAIN, next_due, previous_messages
from mailer.campaigns.score_rules import award_rules
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.timing import next_opening, parse_window, send_windows, variant_picker
from mailer.config import Campaign, Settings, Step
from mailer.consent.expiry import expire_consent
from mailer.consent.standing import Standing, standings
from mailer.consent.state import SENDABLE
from mailer.logs import logger
from mailer.returns.replied import EXITED_REPLIED, replied
from mailer.store.bulk import one_of
from mailer.store.locking import take_enroller_lock
from mailer.store.side_reads import reader_beside
from mailer.store.statistics import analyze_after_big_write
from mailer.store.tables import (
    contacts,
    enrollments,
    outbox,
)
from mailer.store.upsert import insert_new

BATCH = 5000  # due enrollments advanced per transaction
# The tables a tick writes most: after ANALYZE_FROM_ROWS rows written (the import's bound), the
# tick ends with ANALYZE of them on PostgreSQL.
ANALYZED = ("enrollments", "outbox")
# What a tick may have written before its new runs' facts are read beside its transaction:
# its trigger cursors, which no fact reads.
UNREAD = ("trigger_cursors",)
PENDING_RECHECK = timedelta(hours=1)  # a double opt-in not yet confirmed is looked at again
RETRY_FAILED = timedelta(minutes=10)  # a due step that failed is tried (and logged) again
FAILED = "failed: "  # how the reason of an enrollment whose due step failed starts


@dataclass
class TickReport:
    enrolled: int = 0
    queued: int = 0
    converted: int = 0
    exited: int = 0
    postponed: int = 0
    skipped: int = 0
    errors: int = 0  # due steps that raised: postponed by RETRY_FAILED, the error their reason
    completed: int = 0
    expired: int = 0  # consents that lapsed ([lists] expires_after): an `expired` entry each

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, other: TickReport) -> None:
        for count in fields(self):
            setattr(self, count.name, getattr(self, count.name) + getattr(other, count.name))


def tick(engine: Engine, settings: Settings, now: datetime) -> TickReport:
    """Enroll, then advance the due enrollments in batches, each its own transaction. Of
    several processes on one PostgreSQL, one at a time enrolls (the enroller lock); the others
    skip that part of this tick and advance due steps beside it."""
    report = TickReport()
    with engine.begin() as connection:
        if take_enroller_lock(connection):
            start(connection, settings, now, report)
    while True:
        with engine.begin() as connection, _no_cycle_collection():
            if not advance(connection, settings, now, report):
                break
    written = sum(report.as_dict().values()) - report.errors
    analyze_after_big_write(engine, ANALYZED, written, "the tick")
    return report


def start(connection: Connection, settings: Settings, now: datetime, report: TickReport) -> None:
    """What begins now: score rules newly met, enrollments into sequences, and broadcasts
    whose time has come; first, consent that lapsed ([lists] expires_after) stops both gates."""
    report.expired += _on_its_own(connection, partial(expire_consent, connection, settings, now),
                                  "consent expiry failed") or 0  # fmt: skip
    _on_its_own(connection, partial(award_rules, connection, settings, now), "score rules failed")
    work: Callable[[], int | None]
    for name, campaign in settings.campaigns.items():
        if campaign.kind == "sequence" and campaign.trigger:
            work = partial(_enroll, connection, settings, name, campaign, now, report)
            _on_its_own(connection, work, "campaign failed", name)
        elif campaign.kind == "broadcast":
            work = partial(queue_broadcast, connection, settings, name, campaign, now)
            report.queued += _on_its_own(connection, work, "campaign failed", name) or 0
        if campaign.resend is not None or any(step.resend for step in campaign.steps):
            work = partial(queue_resends, connection, settings, name, campaign, now)
            report.queued += _on_its_own(connection, work, "resend failed", name) or 0


def _enroll(connection: Connection, settings: Settings, name: str, campaign: Campaign,
            now: datetime, report: TickReport) -> None:  # fmt: skip
    """Enroll whom the trigger names. Where the first step is due at once and can be decided
    before the rows exist (at_once), it is decided here, as the advance would decide it, and
    each enrollment is inserted as it is after that step (queued, postponed, ended) beside its
    outbox row: written once, not inserted, read back, locked and updated."""
    with _no_cycle_collection():
        fresh = enrollees(connection, settings, name, campaign, now)
        due = [row for row in fresh if row["due_at"] <= now] if at_once(settings, campaign) else []
        part = TickReport(enrolled=len(fresh))
        if due:  # the ids in the trigger's order, as one insert of them all would give them
            ids = enrollment_ids(connection, len(fresh))
            for row, enrollment_id in zip(fresh, ids, strict=True):
                row["id"] = enrollment_id
        insert_new(connection, enrollments, [row for row in fresh if row["due_at"] > now]
                   if due else fresh, keys=ENROLLMENT_KEYS)  # fmt: skip
        _enroll_due(connection, settings, name, campaign, due, now, part)
    report.add(part)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cyclic garbage collector off meanwhile: thousands of new runs or due rows
    allocate a few objects each and free none of them in cycles, and each of the collector's
    full passes walks them all (0.6 s of the 50,000 enroll tick's 1.9 s of CPU, 0.4 s of 2.1 s
    advancing 40,000 due rows in batches). Back on afterwards."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def at_once(settings: Settings, campaign: Campaign) -> bool:
    """Whether a sequence's first step can be decided before its enrollments are written: not
    when the frequency cap weighs them against other due steps (read from the enrollments
    table), nor when the first step's condition reads them. So deciding new runs, once their
    facts are read, reads nothing (_enroll_due decides a batch while the one before is written)."""
    first_condition = campaign.steps[0].condition if campaign.steps else None
    return settings.engine.cap() is None and not first_condition


@dataclass
class _NewRuns:
    """A batch of new enrollments (with their ids) and what was decided for their first step
    (writes None when reading or deciding failed: the rows are then inserted as they are)."""

    rows: list[dict[str, Any]]
    runs: list[_NewRun]  # the rows as the advance reads them
    table: FromClause | None  # the rows as the goal and reply queries join them
    writes: HeldWrites | None = None
    settled: list[dict[str, Any]] = field(default_factory=list)  # the rows after the writes
    part: TickReport = field(default_factory=TickReport)


def _enroll_due(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                due: list[dict[str, Any]], now: datetime, report: TickReport) -> None:  # fmt: skip
    """Decide the first step of new enrollments and write each row once, in batches: a batch
    is decided while the one before is written by a thread (the database server busy with its
    COPY, this process with the deciding). A batch's facts are read before the batch before is
    written, or beside its write on another connection (reader_beside) where that one reads
    what the tick's transaction would: those writes are other contacts' new runs, which no
    fact of this batch reads."""
    # Built when asked for, each while a thread writes the batch before.
    prepared = (_new_runs(connection, campaign, due[first : first + BATCH])
                for first in range(0, len(due), BATCH))  # fmt: skip
    beside = reader_beside(connection, UNREAD) if len(due) > BATCH else nullcontext(connection)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-new-runs") as writer, \
            beside as reader:  # fmt: skip
        previous: _NewRuns | None = None  # decided, to be written
        batch = next(prepared, None)
        while batch is not None:
            if reader is connection:  # no statement of this thread while the other writes
                facts = _new_run_facts(reader, settings, name, campaign, batch, now)
            writing = None if previous is None else writer.submit(
                _write_new_runs, connection, settings, name, previous, now)  # fmt: skip
            if reader is not connection:
                facts = _new_run_facts(reader, settings, name, campaign, batch, now)
            if facts is not None:
                _decide_new_runs(settings, name, campaign, batch, facts, now, connection)
            previous, batch = batch, next(prepared, None)
            if writing is not None:
                report.add(writing.result())
        if previous is not None:
            report.add(_write_new_runs(connection, settings, name, previous, now))


def _new_runs(connection: Connection, campaign: Campaign, rows: list[dict[str, Any]]) -> _NewRuns:
    """A batch of new enrollments in the forms reading their facts needs: built without I/O,
    while a thread writes with `connection` (of which only the dialect is read)."""
    runs = [_NewRun(**row) for row in rows]
    table = unwritten_runs(connection, runs) if campaign.goal or campaign.exit_on_reply else None
    return _NewRuns(rows, runs, table)


def _new_run_facts(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                   batch: _NewRuns, now: datetime) -> _Facts | None:  # fmt: skip
    """What deciding the batch reads, in a savepoint; None (logged) if that failed."""
    try:
        with connection.begin_nested():
            return _read_facts(connection, settings, name, campaign, batch.runs, now,
                               batch.table)  # fmt: skip
    except Exception:
        logger.info("first steps left to the advance", extra={"campaign": name}, exc_info=True)
        return None


def _decide_new_runs(settings: Settings, name: str, campaign: Campaign, batch: _NewRuns,
                     facts: _Facts, now: datetime, connection: Connection) -> None:  # fmt: skip
    """Decide the batch's first steps into batch.writes. Reads nothing (at_once), so it runs
    while a thread writes with `connection`; if it fails (logged), batch.writes stays None."""
    writes, part = HeldWrites(), TickReport()
    try:
        _advance_campaign(connection, settings, name, campaign, batch.runs, now, part, writes,
                          facts)  # fmt: skip
        settled = writes.enrollment_rows(batch.rows, now)
    except Exception:
        logger.info("first steps left to the advance", extra={"campaign": name}, exc_info=True)
        return
    batch.writes, batch.settled, batch.part = writes, settled, part


def _write_new_runs(connection: Connection, settings: Settings, name: str, batch: _NewRuns,
                    now: datetime) -> TickReport:  # fmt: skip
    """Write a decided batch, each row once, in a savepoint; if that fails, or nothing was
    decided, insert the rows as they are, for the advance to decide (and log) row by row.
    What was written: the batch's counts, or none."""
    if batch.writes is not None:
        writes = batch.writes
        try:
            with connection.begin_nested():
                # New runs under the enroller lock: no key is taken (if one is, this is undone).
                insert_new(connection, enrollments, batch.settled, keys=ENROLLMENT_KEYS,
                           untaken=True)  # fmt: skip
                insert_new(connection, outbox, writes.messages, keys=MESSAGE_KEYS, untaken=True)
                announce(connection, settings, writes.goals, now)
            return batch.part
        except Exception:
            logger.info("first steps left to the advance", extra={"campaign": name},
                        exc_info=True)  # fmt: skip
    insert_new(connection, enrollments, batch.rows, keys=ENROLLMENT_KEYS)
    return TickReport()


class _NewRun(NamedTuple):  # built 50,000 at a time: cheaper than a frozen dataclass
    """An enrollment row not written yet, as the advance reads a row of the table."""

    id: int
    campaign: str
    contact_id: int
    cycle: int
    status: str
    entered_at: datetime
    last_position: int
    due_at: datetime
    last_step: str | None = None
    last_step_at: datetime | None = None
    waiting_since: datetime | None = None
    ended_at: datetime | None = None
    reason: str | None = None


def _on_its_own(connection: Connection, work: Callable[[], int | None], failure: str,
                campaign: str | None = None) -> int | None:  # fmt: skip
    """Do `work` in a savepoint: if it raises, it is logged and undone, and the rest of the
    tick goes on (a campaign's broken segment must not hold back the other campaigns)."""
    try:
        with connection.begin_nested():
            return work()
    except Exception:
        logger.exception(failure, extra={"campaign": campaign} if campaign else {})
        return None


def advance(connection: Connection, settings: Settings, now: datetime, report: TickReport) -> bool:
    """Advance one batch of due enrollments; False when none was due."""
    query = (select(enrollments).where(enrollments.c.status == "active",
                                       enrollments.c.due_at <= now)
             .order_by(enrollments.c.due_at).limit(BATCH))  # fmt: skip
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # other workers take other rows
    due = connection.execute(query).all()
    if not due:
        return False
    by_campaign: dict[str, list[Any]] = defaultdict(list)
    for row in due:
        by_campaign[row.campaign].append(row)
    for name, rows in by_campaign.items():
        campaign = settings.campaigns.get(name)
        if campaign is None or campaign.kind != "sequence":
            _end(connection, rows, "exited", now, "the campaign is no longer in settings")
            report.exited += len(rows)
            continue
        _advance_isolated(connection, settings, name, campaign, rows, now, report)
    return True


def _not_due_yet(connection: Connection, settings: Settings, rows: Sequence[Any],
                 now: datetime) -> dict[int, datetime | None]:  # fmt: skip
    """The rows whose next step is not really due, by enrollment id: when it is (its delay
    after the previous message was sent, rhythm.next_due), or None while that message is still
    on its way. One query for all the rows."""
    previous = previous_messages(connection, rows)
    later: dict[int, datetime | None] = {}
    if not previous:  # new runs, or rows before their first step: each is due
        return later
    for row in rows:
        step, last = _upcoming(settings, row), previous.get(row.id)
        if step is not None and last is not None:
            due_at = next_due(last, step.delay)
            if due_at is None or due_at > now:
                later[row.id] = due_at
    return later


def _upcoming(settings: Settings, row: Any) -> Step | None:
    """The step an enrollment is due to send next, as settings describe the campaign now."""
    campaign = settings.campaigns.get(row.campaign)
    steps = campaign.steps if campaign is not None and campaign.kind == "sequence" else []
    position = _next_position(steps, row)
    return steps[position] if position < len(steps) else None


def _advance_isolated(connection: Connection, settings: Settings, name: str,
                      campaign: Campaign, rows: list[Any], now: datetime,
                      report: TickReport) -> None:  # fmt: skip
    """The campaign's due rows together in a savepoint; if that fails, each row in its own, so
    that only the rows that fail wait (RETRY_FAILED, the error as their reason)."""
    part = TickReport()
    try:
        with connection.begin_nested():
            _advance_campaign(connection, settings, name, campaign, rows, now, part)
        report.add(part)
        return
    except Exception:
        logger.exception("campaign failed", extra={"campaign": name})
    failed: list[str] = []
    for row in rows:
        one = TickReport()
        try:
            with connection.begin_nested():
                _advance_campaign(connection, settings, name, campaign, [row], now, one)
        except Exception as error:
            failed.append(_failure(error))
            _postpone(connection, row, now + RETRY_FAILED, f"{FAILED}{failed[-1]} (tried "
                      f"again every {RETRY_FAILED.seconds // 60} minutes)")  # fmt: skip
            one = TickReport(errors=1)
        report.add(one)
    if failed:
        logger.error("due steps failed", extra={"campaign": name, "failed": len(failed),
                                                "first": failed[0]})  # fmt: skip


def _failure(error: Exception) -> str:
    """The error on one line, short enough for an enrollment's reason."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text if len(text) <= 300 else text[:299] + "…"


class _Facts(NamedTuple):
    """What deciding a batch of due enrollments reads from the database."""

    converted: set[int]  # contacts that reached the goal
    answered: set[int]  # enrollments whose contact replied
    audience: dict[int, Standing]  # by contact
    later: dict[int, datetime | None]  # _not_due_yet


def _read_facts(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                rows: list[Any], now: datetime,
                runs: FromClause | None = None) -> _Facts:  # fmt: skip
    """The facts of `rows` (`runs`: the rows as a table, when they are not written yet)."""
    goal = campaign.goal
    converted = _converted(connection, settings, goal, rows, now, runs) if goal else set()
    answered = _answered(connection, settings, name, campaign, rows, now, runs)
    audience = standings(connection, campaign.list_name, [row.contact_id for row in rows])
    return _Facts(converted, answered, audience, _not_due_yet(connection, settings, rows, now))


def _advance_campaign(connection: Connection, settings: Settings, name: str,
                      campaign: Campaign, rows: list[Any], now: datetime, report: TickReport,
                      writes: DueWrites | None = None,
                      facts: _Facts | None = None) -> None:  # fmt: skip
    """Decide for all the rows, then write: a few statements per decision, not per row. With
    HeldWrites, the rows are new enrollments not written yet, their facts read before
    (_enroll_due)."""
    goal = campaign.goal
    if facts is None:
        facts = _read_facts(connection, settings, name, campaign, rows, now)
    converted, answered, audience, later = facts
    writes = DueWrites() if writes is None else writes
    ready: list[tuple[Any, Standing]] = []
    for row in rows:
        contact = audience.get(row.contact_id)
        if row.contact_id in converted:
            writes.goals[row.id] = str(goal)
            report.converted += 1
        elif row.id in answered:  # a person answered: a person, not the next step, replies
            writes.end(row.id, "exited", now, EXITED_REPLIED)
            report.exited += 1
        elif contact is None or not contact.member:
            writes.end(row.id, "exited", now, f"left the list {campaign.list_name}")
            report.exited += 1
        elif contact.suppressed or contact.status in ("withdrawn", "none"):
            reason = "suppressed" if contact.suppressed else f"no consent ({contact.status})"
            writes.end(row.id, "exited", now, reason)
            report.exited += 1
        elif contact.status not in SENDABLE:
            writes.postpone(row.id, now + PENDING_RECHECK, "consent pending confirmation")
            report.postponed += 1
        elif row.id in later:
            _keep_rhythm(writes, row, later[row.id], now, report)
        else:
            ready.append((row, contact))
    # Written first, the rows that ended or wait are no longer rivals for the cap's slots.
    writes.write(connection, settings, now)
    capped = _capped(connection, settings, [row for row, _ in ready], now)
    for row, _ in ready:
        if row.contact_id in capped:
            until, reason = capped[row.contact_id]
            writes.postpone(row.id, until, reason)
            report.postponed += 1
    served = [(row, contact) for row, contact in ready if row.contact_id not in capped]
    _next_steps(connection, settings, name, campaign, served, now, writes, report)
    writes.write(connection, settings, now)


def _next_steps(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                ready: list[tuple[Any, Standing]], now: datetime, writes: DueWrites,
                report: TickReport) -> None:  # fmt: skip
    """Queue each enrollment's next step, skipping steps whose condition is false: in rounds,
    one per step reached, a condition read once for all the rows at its step."""
    steps = campaign.steps
    at = [(row, contact, _next_position(steps, row)) for row, contact in ready]
    sending: dict[int, _Sending] = {}
    while at:
        holding = _holding(connection, settings, name, campaign, at, now)
        skipped: list[tuple[Any, Standing, int]] = []
        for row, contact, position in at:
            if position >= len(steps):
                writes.end(row.id, "completed", now, None)
                report.completed += 1
                continue
            step = steps[position]
            if step.condition and row.id not in holding:
                writes.message(name, step.name, row, "skipped", None,
                               f"condition: {step.condition}", None, now)  # fmt: skip
                report.skipped += 1
                position = campaign.after_skip(position)
                if position < len(steps) and steps[position].delay:
                    # The next step's delay counts from this skip. last_step becomes the step
                    # just before it (the skipped one, or the last a branch jumps over).
                    writes.change(row.id, last_step=steps[position - 1].name,
                                  last_position=position - 1, last_step_at=now,
                                  due_at=now + steps[position].delay, waiting_since=None,
                                  reason=None)  # fmt: skip
                else:
                    skipped.append((row, contact, position))
                continue
            if position not in sending:
                sending[position] = _sending(settings, name, campaign, position)
            _send_step(settings, name, campaign, position, row, contact, now, sending[position],
                       writes, report)  # fmt: skip
        # The skips are written before the next round's conditions read the database.
        writes.write(connection, settings, now)
        at = skipped


@dataclass(frozen=True)
class _Sending:
    """What sending one step needs that is the same for every contact: read once per tick."""

    windows: list[tuple[str, str]]  # (window, the reason of a postponement to it)
    variant: Callable[[int], str] | None  # the A/B split's pick by contact id, None without
    dated: bool  # the first step of a date-triggered sequence (past_its_day applies)
    openings: dict[tuple[str, str], datetime]  # (window, zone) -> its next opening after now


def _sending(settings: Settings, name: str, campaign: Campaign, position: int) -> _Sending:
    step = campaign.steps[position]
    weights = {"A": 1, **{label: v.weight for label, v in step.variants.items()}}
    variant = variant_picker(name, step.name, weights) if step.variants else None
    dated = position == 0 and date_triggered(campaign) is not None
    return _Sending(send_windows(settings, step), variant, dated, {})


def _send_step(settings: Settings, name: str, campaign: Campaign, position: int, row: Any,
               contact: Standing, now: datetime, sending: _Sending, writes: DueWrites,
               report: TickReport) -> None:  # fmt: skip
    """Queue the step at `position`, or postpone it to its send window, or skip a date step
    too late for its day."""
    steps = campaign.steps
    step = steps[position]
    zone = contact.timezone or settings.default_timezone
    windows = sending.windows
    late = sending.dated and past_its_day(campaign, position, row.entered_at, zone,
                                          [w for w, _ in windows], now)  # fmt: skip
    if late:  # a birthday message too late for its day is not sent at all, nor the run's rest
        writes.message(name, step.name, row, "skipped", None, late, None, now)
        writes.end(row.id, "completed", now, None)
        report.skipped += 1
        report.completed += 1
        return
    for window, reason in windows:
        opening = sending.openings.get((window, zone))
        if opening is None:
            opening = sending.openings[window, zone] = next_opening(parse_window(window), now,
                                                                    zone)  # fmt: skip
        if opening > now:
            writes.postpone(row.id, opening, f"{reason} ({zone})")
            report.postponed += 1
            return
    variant = sending.variant(row.contact_id) if sending.variant else None
    writes.message(name, step.name, row, "queued", None if variant == "A" else variant, None,
                   contact.entry_id, now)  # fmt: skip
    report.queued += 1
    following = steps[position + 1] if position + 1 < len(steps) else None
    writes.change(row.id, last_step=step.name, last_position=position, last_step_at=now,
                  due_at=now + following.delay if following else None, waiting_since=None,
                  status="active" if following else "completed",
                  ended_at=None if following else now, reason=None)  # fmt: skip
    report.completed += 0 if following else 1


def _keep_rhythm(writes: DueWrites, row: Any, due_at: datetime | None, now: datetime,
                 report: TickReport) -> None:  # fmt: skip
    """Due again when the delay has passed since the previous message was sent (not a
    postponement: the step was not due yet), or shortly while that message is on its way."""
    reason = None
    if due_at is None:
        due_at, reason = now + LOOK_AGAIN, f"waiting for {row.last_step} to be sent"
        report.postponed += 1
    writes.change(row.id, due_at=due_at, reason=reason, waiting_since=None)


def _capped(connection: Connection, settings: Settings, rows: list[Any],
            now: datetime) -> dict[int, tuple[datetime, str]]:  # fmt: skip
    """Contacts whose due step gets no slot under the frequency cap: when to look again (when
    their oldest message leaves the window), and the reason. The slots go first to the steps
    first in line (cap_queue) among all the contact's due steps, in any sequence."""
    cap = settings.engine.cap()
    if cap is None or not rows:
        return {}
    limit, window = cap
    ids = [row.contact_id for row in rows]
    recent = connection.execute(
        select(outbox.c.contact_id, func.count().label("messages"),
               func.min(outbox.c.queued_at).label("oldest"))
        .where(outbox.c.status.in_(ON_THE_WAY), outbox.c.queued_at > now - window,
               one_of(connection, outbox.c.contact_id, ids))
        .group_by(outbox.c.contact_id)
    ).all()  # fmt: skip
    rivals = connection.execute(
        select(enrollments).where(enrollments.c.status == "active", enrollments.c.due_at <= now,
                                  one_of(connection, enrollments.c.contact_id, ids))
    ).all()  # fmt: skip
    # Another sequence's step not due yet by the rhythm is not waiting for a slot (the rows
    # themselves were checked).
    mine = {row.id for row in rows}
    others = [rival for rival in rivals if rival.id not in mine]
    later = _not_due_yet(connection, settings, others, now) if others else {}
    waiting = [Waiting(rival.id, rival.contact_id, _priority(settings, rival),
                       rival.waiting_since or rival.due_at)
               for rival in rivals if rival.id not in later]  # fmt: skip
    served = first_in_line(waiting, {r.contact_id: limit - r.messages for r in recent}, limit)
    oldest = {r.contact_id: r.oldest for r in recent}
    reason = f"{CAPPED} ({settings.engine.frequency_cap})"
    return {row.contact_id: (oldest[row.contact_id] + window if row.contact_id in oldest
                             else now + window, reason)
            for row in rows if row.id not in served}  # fmt: skip


def _priority(settings: Settings, row: Any) -> str:
    step = _upcoming(settings, row)
    return step.priority if step is not None else "normal"


def _next_position(steps: list[Step], row: Any) -> int:
    """After the last step sent; if settings lost that step, after the same position (an
    inserted step applies to those who have not reached it, a removed one is skipped)."""
    if row.last_step is not None:
        for position, step in enumerate(steps):
            if step.name == row.last_step:
                return position + 1
    return int(row.last_position) + 1


def _holding(connection: Connection, settings: Settings, name: str, campaign: Campaign,
             at: list[tuple[Any, Standing, int]], now: datetime) -> set[int]:  # fmt: skip
    """The enrollments whose next step, at the position given, has a condition that holds:
    one query per step. `opened previous` reads this run's previous message: opens since each
    enrollment's run began."""
    by_position: dict[int, list[int]] = defaultdict(list)
    for row, _, position in at:
        if position < len(campaign.steps) and campaign.steps[position].condition:
            by_position[position].append(row.id)
    holding: set[int] = set()
    for position, ids in by_position.items():
        previous = (name, campaign.steps[position - 1].name) if position > 0 else None
        compiler = SegmentCompiler.for_settings(settings, now, previous,
                                                entered=enrollments.c.entered_at)  # fmt: skip
        condition = compiled(compiler, str(campaign.steps[position].condition))
        holding.update(connection.scalars(
            select(enrollments.c.id)
            .select_from(enrollments.join(contacts, enrollments.c.contact_id == contacts.c.id))
            .where(one_of(connection, enrollments.c.id, ids), condition)))  # fmt: skip
    return holding


def _converted(connection: Connection, settings: Settings, goal: str, rows: list[Any],
               now: datetime, runs: FromClause | None = None) -> set[int]:  # fmt: skip
    """The contacts among `rows` that reached the goal since they entered this run (`runs`:
    the rows as a table when they are not written yet)."""
    reached = reached_goal(connection, settings, goal, [row.id for row in rows], now, runs)
    return {row.contact_id for row in rows if row.id in reached}


def _answered(connection: Connection, settings: Settings, name: str, campaign: Campaign,
              rows: list[Any], now: datetime,
              runs: FromClause | None = None) -> set[int]:  # fmt: skip
    """The enrollments among `rows` of an exit_on_reply sequence whose contact replied."""
    if not campaign.exit_on_reply:
        return set()
    return replied(connection, settings, name, [row.id for row in rows], now, runs)


def _postpone(connection: Connection, row: Any, until: datetime, reason: str) -> None:
    """Due again at `until`; waiting_since keeps when the step was first due."""
    connection.execute(update(enrollments).where(enrollments.c.id == row.id).values(
        due_at=until, reason=reason, waiting_since=row.waiting_since or row.due_at))  # fmt: skip


def _end(connection: Connection, rows: list[Any], status: str, now: datetime,
         reason: str | None) -> None:  # fmt: skip
    ended = update(enrollments).where(one_of(connection, enrollments.c.id, [r.id for r in rows]))
    connection.execute(ended.values(status=status, ended_at=now, due_at=None, reason=reason))
