"""`mailer plan`: what the engine would queue over the coming hours, without queueing it.

The real engine runs, hour by hour, inside one transaction that is rolled back at the end: the
plan is exactly what ticks would do (same code, same consent checks), and writes nothing."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from mailer.campaigns.engine import TickReport, advance, start
from mailer.config import Settings
from mailer.store.tables import enrollments, outbox


@dataclass
class Plan:
    start: datetime
    hours: int
    # (campaign, step) -> hour offset -> messages queued
    queued: dict[tuple[str, str], Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    held_back: Counter[tuple[str, str]] = field(default_factory=Counter)  # (campaign, reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(), "hours": self.hours,
            "queued": [{"campaign": campaign, "step": step, "total": sum(hours.values()),
                        "by_hour": {str(hour): count for hour, count in sorted(hours.items())}}
                       for (campaign, step), hours in sorted(self.queued.items())],
            "held_back": [{"campaign": campaign, "reason": reason, "count": count}
                          for (campaign, reason), count in sorted(self.held_back.items())],
        }  # fmt: skip


def plan(engine: Engine, settings: Settings, now: datetime, horizon: timedelta) -> Plan:
    hours = max(1, int(horizon.total_seconds() // 3600))
    result = Plan(now, hours)
    with engine.connect() as connection, connection.begin() as transaction:
        try:
            for hour in range(hours + 1):
                moment = now + timedelta(hours=hour)
                report = TickReport()
                start(connection, settings, moment, report)
                while advance(connection, settings, moment, report):
                    pass
            new = connection.execute(
                select(outbox.c.campaign, outbox.c.step, outbox.c.status, outbox.c.reason,
                       outbox.c.queued_at, func.count().label("messages"))
                .where(outbox.c.queued_at >= now)
                .group_by(outbox.c.campaign, outbox.c.step, outbox.c.status, outbox.c.reason,
                          outbox.c.queued_at)
            )  # fmt: skip
            for row in new:
                if row.status == "queued":
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
        finally:
            transaction.rollback()
    return result
