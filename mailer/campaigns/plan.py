"""`mailer plan`: what the engine would queue over the coming hours, without queueing it.

The real engine runs, hour by hour, inside one transaction that is rolled back at the end: the
plan is exactly what ticks would do (same code, same consent checks), and writes nothing. On
SQLite it runs on a copy taken with the backup API, so the live file is never write-locked and
`mailer event`, the daemon and the tracking endpoint go on writing while a long plan runs."""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text, update
from sqlalchemy.pool import StaticPool

from mailer.campaigns.engine import TickReport, advance, start
from mailer.config import Settings
from mailer.store.engine import create_database_engine
from mailer.store.tables import (
    awarded_rules,
    broadcast_runs,
    broadcast_zones,
    contacts,
    enrollments,
    events,
    outbox,
    trigger_cursors,
)


@dataclass
class Plan:
    start: datetime
    hours: int
    # (campaign, step) -> hour offset -> messages queued
    queued: dict[tuple[str, str], Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    held_back: Counter[tuple[str, str]] = field(default_factory=Counter)  # (campaign, reason)

    def first(self, campaign: str, step: str) -> datetime:
        """When the plan first queues this step (ticks run hourly from `start`)."""
        return self.start + timedelta(hours=min(self.queued[(campaign, step)]))

    def by_day(self, campaign: str, step: str) -> dict[date, int]:
        """Messages queued per calendar day (UTC), not per 24 hours from `start`."""
        days: Counter[date] = Counter()
        for hour, count in self.queued[(campaign, step)].items():
            days[(self.start + timedelta(hours=hour)).date()] += count
        return dict(sorted(days.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(), "hours": self.hours,
            "queued": [{"campaign": campaign, "step": step, "total": sum(hours.values()),
                        "first": self.first(campaign, step).isoformat(),
                        "by_day": {day.isoformat(): count
                                   for day, count in self.by_day(campaign, step).items()},
                        "by_hour": {str(hour): count for hour, count in sorted(hours.items())}}
                       for (campaign, step), hours in sorted(self.queued.items())],
            "held_back": [{"campaign": campaign, "reason": reason, "count": count}
                          for (campaign, reason), count in sorted(self.held_back.items())],
        }  # fmt: skip


def plan(engine: Engine, settings: Settings, now: datetime, horizon: timedelta) -> Plan:
    hours = max(1, int(horizon.total_seconds() // 3600))
    result = Plan(now, hours)
    with _snapshot(engine) as copy, _rolled_back(copy) as connection:
        before = connection.execute(select(func.coalesce(func.max(outbox.c.id), 0))).scalar_one()
        for hour in range(hours + 1):
            moment = now + timedelta(hours=hour)
            report = TickReport()
            start(connection, settings, moment, report)
            while advance(connection, settings, moment, report):
                pass
            _delivered(connection, moment)
        new = connection.execute(
            select(outbox.c.campaign, outbox.c.step, outbox.c.status, outbox.c.reason,
                   outbox.c.queued_at, func.count().label("messages"))
            .where(outbox.c.id > before)  # what the plan queued, not what was sent already
            .group_by(outbox.c.campaign, outbox.c.step, outbox.c.status, outbox.c.reason,
                      outbox.c.queued_at)
        )  # fmt: skip
        for row in new:
            if row.status in ("queued", "sent"):
                offset = int((row.queued_at - now).total_seconds() // 3600)
                result.queued[(row.campaign, row.step)][offset] += row.messages
            else:
                result.held_back[(row.campaign, f"{row.step}: {row.reason}")] += row.messages
        waiting = connection.execute(
            select(enrollments.c.campaign, enrollments.c.reason, func.count().label("contacts"))
            .where(enrollments.c.reason.is_not(None),
                   func.coalesce(enrollments.c.ended_at, now) >= now)
            .group_by(enrollments.c.campaign, enrollments.c.reason)
        )  # fmt: skip
        for row in waiting:
            result.held_back[(row.campaign, row.reason)] += row.contacts
    return result


def _delivered(connection: Connection, moment: datetime) -> None:
    """The plan takes what is queued as sent at once, as `tick --until` does: a step's delay
    counts from the previous message's delivery (campaigns/rhythm.py)."""
    connection.execute(update(outbox).where(outbox.c.status == "queued",
                                            outbox.c.send_after <= moment)
                       .values(status="sent", sent_at=moment))  # fmt: skip


# What the engine writes: on PostgreSQL the plan writes into private copies of these tables.
WRITTEN = (contacts, events, awarded_rules, enrollments, outbox, trigger_cursors,
           broadcast_runs, broadcast_zones)  # fmt: skip


@contextmanager
def _rolled_back(engine: Engine) -> Iterator[Connection]:
    """A transaction for the plan, rolled back at the end. On PostgreSQL it is REPEATABLE READ
    (one snapshot) and the tables the engine writes are shadowed by temporary copies (a temporary
    table comes first on the search path): the plan takes no row lock the daemon could wait on
    or skip, and the copies vanish with the transaction."""
    postgresql = engine.dialect.name == "postgresql"
    options = {"isolation_level": "REPEATABLE READ"} if postgresql else {}
    with engine.connect().execution_options(**options) as connection:
        transaction = connection.begin()
        try:
            if postgresql:
                schema = connection.execute(text("SELECT current_schema()")).scalar_one()
                for table in WRITTEN:
                    live = f'"{schema}"."{table.name}"'
                    connection.exec_driver_sql(
                        f'CREATE TEMPORARY TABLE "{table.name}" (LIKE {live} INCLUDING DEFAULTS '
                        f"INCLUDING INDEXES) ON COMMIT DROP"
                    )
                    connection.exec_driver_sql(
                        f'INSERT INTO pg_temp."{table.name}" SELECT * FROM {live}'
                    )
            yield connection
        finally:
            transaction.rollback()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Engine]:
    """The database to plan on: on SQLite a copy in memory (the backup API reads the live file
    as a WAL reader, blocking no writer); on PostgreSQL the database itself."""
    if engine.dialect.name != "sqlite":
        yield engine
        return
    copy = sqlite3.connect(":memory:", check_same_thread=False)
    with engine.connect() as live:
        source = live.connection.driver_connection
        assert isinstance(source, sqlite3.Connection)
        source.backup(copy)
    snapshot = create_database_engine("sqlite://", creator=lambda: copy, poolclass=StaticPool)
    try:
        yield snapshot
    finally:
        snapshot.dispose()
        copy.close()
