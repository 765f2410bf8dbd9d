"""Sequence runs whose due step fails at every tick (a condition that cannot be compared, a
contact's time zone no zone database knows): each is tried again every RETRY_FAILED and logged,
and the others go on. This is where an operator sees who waits, since when, and why (`mailer
campaign failing`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from mailer.campaigns.engine import FAILED
from mailer.store.tables import contacts, enrollments


@dataclass(frozen=True)
class FailingRun:
    campaign: str
    email: str
    last_step: str | None  # the step sent last (None: the first is the one failing)
    failing_since: datetime | None  # when the failing step was first due
    next_try: datetime | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        for moment in ("failing_since", "next_try"):
            found[moment] = found[moment].isoformat() if found[moment] else None
        return found


def failing_runs(connection: Connection, campaign: str | None = None,
                 limit: int | None = None) -> tuple[int, list[FailingRun]]:  # fmt: skip
    """How many active runs fail (of `campaign`, or all), and the first `limit` of them,
    longest failing first."""
    where = [enrollments.c.status == "active", enrollments.c.reason.startswith(FAILED)]
    if campaign is not None:
        where.append(enrollments.c.campaign == campaign)
    query = (
        select(enrollments.c.campaign, contacts.c.email, enrollments.c.last_step,
               enrollments.c.waiting_since, enrollments.c.due_at, enrollments.c.reason)
        .join(contacts, contacts.c.id == enrollments.c.contact_id)
        .where(*where)
        .order_by(enrollments.c.waiting_since, enrollments.c.id)
        .limit(limit)
    )  # fmt: skip
    count = connection.scalar(select(func.count()).select_from(enrollments).where(*where))
    return int(count or 0), [FailingRun(*row) for row in connection.execute(query)]
