"""Tables that do not grow without end ([retention], `mailer retention run`, daily in `mailer
run`).

- Opens and clicks (people's and machines') older than `events_after` become one row per
  (message, kind, UTC day) in `event_rollups`, and their raw rows are deleted: unique counts
  are per message and the report's period is the message's `queued_at`, so `mailer report`
  counts exactly what it counted before.
- Website events older than `website_events_after` (default: never) become a count per (UTC
  day, name) in `website_rollups`, for the totals, and one per (contact, name, UTC day) in
  `website_contact_rollups`, which `event "..."` conditions without a property filter read
  (segment_sql.py). Survey answers are kept: they are the answers themselves.
- A sent message's click targets (`outbox.links`) are cleared after `rendered_after`.
- Returned messages (bounces, complaints, feedback reports, auto-replies, replies) older than
  `returns_after` become one count per (UTC day, classification, message) in
  `returned_rollups`, and their rows (digest, recipient hash, status) are deleted: the report
  takes each message's worst return from both, and the rates of the compliance report and the
  doctor count the rolled-up days too. A reply not yet forwarded is kept until it is. Once a
  digest is forgotten, the same bounce read again could act twice: returns/effects.py does
  not act on a bounce of a message sent before `returns_after`.
- The provider webhook calls remembered to refuse a replay (`webhook_deliveries`) are deleted
  after a day ([webhooks] max_age, if longer): a signed call that old is refused as stale
  anyway, and a Postmark call (no signature time) sent again later acts on nothing twice,
  since each report it carries is remembered by its digest (returns/effects.py).

Each batch is one short transaction that deletes its raw rows and adds their counts, so a
batch is counted once or not at all (a crash, a second process: PostgreSQL's DELETE ...
RETURNING hands a row to one transaction only), and a second run finds nothing to do. An
event a trigger has not read yet (its id past a cursor) is never deleted. The consent ledger
is never touched. A run that changed ANALYZE_FROM_ROWS rows or more ends with ANALYZE of the
tables it changed (PostgreSQL), as a big import or tick does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    case,
    delete,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy import update as update_rows

from mailer.campaigns.score_rules import CURSOR as SCORE_RULES_CURSOR
from mailer.config import Settings
from mailer.reports.counts import message_of_event
from mailer.returns.replies import FORWARDED
from mailer.store.rollups import add_counts, utc_day
from mailer.store.statistics import analyze_after_big_write
from mailer.store.tables import (
    event_rollups,
    events,
    outbox,
    returned_messages,
    returned_rollups,
    trigger_cursors,
    webhook_deliveries,
    website_contact_rollups,
    website_rollups,
)
from mailer.tracking.surveys import EVENT as SURVEY_ANSWER

BATCH = 1_000  # rows a transaction: the daemon's writes wait at most one batch
TRACKING = ("open", "click", "machine_open", "machine_click")
# The PostgreSQL advisory lock of retention ("reta" in ASCII), paired with the schema's hash:
# one process prunes at a time; another finds it held and leaves the work to it.
RETENTION_LOCK = 0x72657461
WEBHOOK_CALLS_KEPT = timedelta(days=1)  # at least: [webhooks] max_age if longer
NO_MESSAGE = 0  # returned_rollups.outbox_id of returns matched to no message (ids start at 1)


@dataclass
class Pruned:
    """What a run did (or, with `dry_run`, would do)."""

    dry_run: bool
    events_before: datetime | None  # opens and clicks before this were rolled up
    website_events_before: datetime | None
    links_before: datetime | None  # sent before this: click targets cleared
    webhook_calls_before: datetime | None = None  # received before this: forgotten
    returns_before: datetime | None = None  # returned messages received before: rolled up
    opens_and_clicks: int = 0  # raw rows rolled up and deleted
    unmatched: int = 0  # of them, opens and clicks of no message left: deleted, counted nowhere
    website_events: int = 0
    links_cleared: int = 0
    webhook_calls: int = 0  # provider webhook calls no longer remembered
    returned: int = 0  # returned messages rolled up and deleted
    busy: bool = False  # another process was pruning: it finishes the work

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        for name in (
            "events_before",
            "website_events_before",
            "links_before",
            "webhook_calls_before",
            "returns_before",
        ):
            moment = found[name]
            found[name] = moment.isoformat() if moment is not None else None
        return found


def run_retention(engine: Engine, settings: Settings, now: datetime,
                  dry_run: bool = False) -> Pruned:  # fmt: skip
    """Roll up and delete what [retention] says is old at `now`; idempotent."""
    kept = settings.retention

    def before(period: timedelta | None) -> datetime | None:
        return None if period is None else now - period

    pruned = Pruned(dry_run, before(kept.events_after), before(kept.website_events_after),
                    before(kept.rendered_after),
                    before(max(WEBHOOK_CALLS_KEPT, settings.webhooks.max_age)),
                    before(kept.returns_after))  # fmt: skip
    with engine.connect() as connection:
        unread = _unread_after(connection, settings)
    if dry_run:
        with engine.connect() as connection:
            _count_only(connection, pruned, unread)
        return pruned
    if pruned.events_before is not None:
        _in_batches(engine, pruned, _tracking(pruned.events_before, unread), _roll_up_tracking)
    if not pruned.busy and pruned.website_events_before is not None:
        _in_batches(engine, pruned, _website(pruned.website_events_before, unread),
                    _roll_up_website)  # fmt: skip
    if not pruned.busy and pruned.links_before is not None:
        _clear_links(engine, pruned, pruned.links_before)
    if not pruned.busy and pruned.webhook_calls_before is not None:
        _forget_webhook_calls(engine, pruned, pruned.webhook_calls_before)
    if not pruned.busy and pruned.returns_before is not None:
        _roll_up_returns(engine, pruned, pruned.returns_before)
    _refresh_statistics(engine, pruned)
    return pruned


def _refresh_statistics(engine: Engine, pruned: Pruned) -> None:
    """After a run that changed as many rows as a big import writes, ANALYZE the tables it
    changed, as imports and ticks do (PostgreSQL: store/statistics.py)."""
    changed = {
        "events": pruned.opens_and_clicks + pruned.website_events,  # deleted
        "event_rollups": pruned.opens_and_clicks - pruned.unmatched,
        "website_rollups": pruned.website_events,
        "website_contact_rollups": pruned.website_events,
        "outbox": pruned.links_cleared,
        "returned_messages": pruned.returned,  # deleted
        "returned_rollups": pruned.returned,
    }
    written = changed["events"] + changed["outbox"] + changed["returned_messages"]
    analyze_after_big_write(engine, [table for table, rows in changed.items() if rows],
                            written, "the retention run")  # fmt: skip


def _unread_after(connection: Connection, settings: Settings) -> int | None:
    """The lowest event id an event trigger (or the score rules) may still read after: events
    past it are kept whatever their age (the events API takes an `occurred_at` in the past).
    Cursors of campaigns no longer in settings hold nothing back."""
    names = [*settings.campaigns, SCORE_RULES_CURSOR]
    # An event trigger reads on after `events_from` (late commits); the score rules after
    # `events_to` (campaigns/score_rules.py).
    cursor = trigger_cursors.c
    read = case((cursor.campaign == SCORE_RULES_CURSOR, cursor.events_to), else_=cursor.events_from)
    lowest = connection.scalar(select(func.min(read)).where(cursor.campaign.in_(names)))
    return None if lowest is None else int(lowest)


def _read(unread: int | None) -> list[ColumnElement[bool]]:
    return [] if unread is None else [events.c.id <= unread]


def _tracking(before: datetime, unread: int | None) -> list[ColumnElement[bool]]:
    return [events.c.kind.in_(TRACKING), events.c.occurred_at < before, *_read(unread)]


def _website(before: datetime, unread: int | None) -> list[ColumnElement[bool]]:
    return [events.c.kind == "website", events.c.name != SURVEY_ANSWER,
            events.c.occurred_at < before, *_read(unread)]  # fmt: skip


def _old_links(before: datetime) -> list[ColumnElement[bool]]:
    return [outbox.c.status == "sent", outbox.c.sent_at < before, outbox.c.links.is_not(None)]


def _old_returns(before: datetime) -> list[ColumnElement[bool]]:
    returned = returned_messages.c
    waiting = (returned.classification == "reply") & ~returned.action.startswith(FORWARDED)
    return [returned.received_at < before, ~waiting]  # a reply still to forward stays


def _count_only(connection: Connection, pruned: Pruned, unread: int | None) -> None:
    def count(table: Table, where: list[ColumnElement[bool]]) -> int:
        return int(connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)

    if pruned.events_before is not None:
        pruned.opens_and_clicks = count(events, _tracking(pruned.events_before, unread))
    if pruned.website_events_before is not None:
        pruned.website_events = count(events, _website(pruned.website_events_before, unread))
    if pruned.links_before is not None:
        pruned.links_cleared = count(outbox, _old_links(pruned.links_before))
    if pruned.webhook_calls_before is not None:
        pruned.webhook_calls = count(
            webhook_deliveries, [webhook_deliveries.c.received_at < pruned.webhook_calls_before]
        )
    if pruned.returns_before is not None:
        pruned.returned = count(returned_messages, _old_returns(pruned.returns_before))


def _took_lock(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return True  # SQLite: every write transaction holds the one write lock
    return bool(connection.scalar(
        text("SELECT pg_try_advisory_xact_lock(:key, hashtext(current_schema()))"),
        {"key": RETENTION_LOCK}))  # fmt: skip


def _in_batches(engine: Engine, pruned: Pruned, where: list[ColumnElement[bool]],
                roll_up: Any) -> None:  # fmt: skip
    """Take the old events `where` picks, BATCH at a time in id order; each batch's deletion
    and roll-up commit together."""
    after = 0
    columns = [events.c.id, events.c.contact_id, events.c.kind, events.c.name,
               events.c.occurred_at, message_of_event().label("message")]  # fmt: skip

    def batch(connection: Connection) -> bool:
        nonlocal after
        rows = connection.execute(
            select(*columns).where(*where, events.c.id > after)
            .order_by(events.c.id).limit(BATCH)
        ).all()  # fmt: skip
        if not rows:
            return False
        after = rows[-1].id
        deleted = set(connection.scalars(
            delete(events).where(events.c.id.in_([row.id for row in rows]))
            .returning(events.c.id)))  # fmt: skip
        roll_up(connection, pruned, [row for row in rows if row.id in deleted])
        return True

    _until_done(engine, pruned, batch)


def _until_done(engine: Engine, pruned: Pruned, batch: Callable[[Connection], bool]) -> None:
    """Run `batch` in a transaction of its own, under the retention lock, until it finds
    nothing left to do; when another process holds the lock, it finishes (`pruned.busy`)."""
    while True:
        with engine.begin() as connection:
            if not _took_lock(connection):
                pruned.busy = True
                return
            if not batch(connection):
                return


def _roll_up_tracking(connection: Connection, pruned: Pruned, rows: Iterable[Any]) -> None:
    totals: dict[tuple[int, str, str], list[Any]] = {}
    for row in rows:
        pruned.opens_and_clicks += 1
        if row.message is None:  # recorded before 0019 and matched to no message: never counted
            pruned.unmatched += 1
            continue
        _tally(totals, (int(row.message), row.kind, utc_day(row.occurred_at)), row.occurred_at)
    add_counts(connection, event_rollups, ("outbox_id", "kind", "day"),
               [{"outbox_id": message, "kind": kind, "day": day, "events": n, "last_at": last}
                for (message, kind, day), (n, last) in sorted(totals.items())])  # fmt: skip


def _roll_up_website(connection: Connection, pruned: Pruned, rows: Iterable[Any]) -> None:
    totals: dict[tuple[str, str], int] = {}
    theirs: dict[tuple[int, str, str], list[Any]] = {}  # per contact, for segments and goals
    for row in rows:
        pruned.website_events += 1
        day = utc_day(row.occurred_at)
        totals[day, row.name] = totals.get((day, row.name), 0) + 1
        _tally(theirs, (row.contact_id, row.name, day), row.occurred_at)
    add_counts(connection, website_rollups, ("day", "name"),
               [{"day": day, "name": name, "events": n}
                for (day, name), n in sorted(totals.items())])  # fmt: skip
    add_counts(connection, website_contact_rollups, ("contact_id", "name", "day"),
               [{"contact_id": contact, "name": name, "day": day, "events": n, "last_at": last}
                for (contact, name, day), (n, last) in sorted(theirs.items())])  # fmt: skip


def _tally(totals: dict[Any, list[Any]], key: Any, at: datetime) -> None:
    """One more event under `key`: [how many, the latest time]."""
    total = totals.setdefault(key, [0, at])
    total[0] += 1
    total[1] = max(total[1], at)


def _clear_links(engine: Engine, pruned: Pruned, before: datetime) -> None:
    """Sent messages older than `before` lose their click targets, BATCH at a time."""

    def batch(connection: Connection) -> bool:
        ids = list(connection.scalars(select(outbox.c.id).where(*_old_links(before))
                                      .order_by(outbox.c.id).limit(BATCH)))  # fmt: skip
        if ids:
            cleared = connection.execute(
                update_rows(outbox).where(outbox.c.id.in_(ids), outbox.c.links.is_not(None))
                .values(links=None))  # fmt: skip
            pruned.links_cleared += cleared.rowcount or 0
        return bool(ids)

    _until_done(engine, pruned, batch)


def _forget_webhook_calls(engine: Engine, pruned: Pruned, before: datetime) -> None:
    """Provider webhook calls received before `before` are forgotten, BATCH at a time."""
    calls = webhook_deliveries.c

    def batch(connection: Connection) -> bool:
        keys = connection.execute(
            select(calls.provider, calls.delivery).where(calls.received_at < before).limit(BATCH)
        ).all()
        if keys:
            forgotten = connection.execute(
                delete(webhook_deliveries).where(
                    tuple_(calls.provider, calls.delivery).in_([tuple(key) for key in keys])
                )
            )
            pruned.webhook_calls += forgotten.rowcount or 0
        return bool(keys)

    _until_done(engine, pruned, batch)


def _roll_up_returns(engine: Engine, pruned: Pruned, before: datetime) -> None:
    """Returned messages received before `before` are counted in returned_rollups and deleted,
    BATCH at a time; each batch's deletion and counts commit together."""
    returned = returned_messages.c

    def batch(connection: Connection) -> bool:
        ids = list(connection.scalars(select(returned.id).where(*_old_returns(before))
                                      .order_by(returned.id).limit(BATCH)))  # fmt: skip
        if not ids:
            return False
        rows = connection.execute(
            delete(returned_messages).where(returned.id.in_(ids))
            .returning(returned.received_at, returned.classification, returned.outbox_id)
        ).all()  # fmt: skip
        totals: dict[tuple[str, str, int], int] = {}
        for row in rows:
            key = (utc_day(row.received_at), row.classification, row.outbox_id or NO_MESSAGE)
            totals[key] = totals.get(key, 0) + 1
        add_counts(connection, returned_rollups, ("day", "classification", "outbox_id"),
                   [{"day": day, "classification": kind, "outbox_id": message, "events": n}
                    for (day, kind, message), n in sorted(totals.items())])  # fmt: skip
        pruned.returned += len(rows)
        return True

    _until_done(engine, pruned, batch)
