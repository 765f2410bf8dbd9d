"""Bounce and complaint rates over a period, against the published limits: Gmail and Yahoo want
spam complaints under 0.3% (aim under 0.1%); Amazon SES reviews an account at 5% bounces and
pauses it at 10%. A rate is returns received in the period over messages sent in it (Gmail
Postmaster's definition), so the compliance report and the doctor say the same thing. A
hard bounce at the relay (returns/refusals.py) counts as a hard bounce of a message sent. Returns
rolled up by retention count by the day they came (returned_rollups)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, func, select

from mailer.consent.audit import Period
from mailer.returns.breakers import REFUSED
from mailer.store.tables import outbox, returned_messages, returned_rollups

COMPLAINT_AIM = 0.001  # Gmail: aim under 0.1%
COMPLAINT_LIMIT = 0.003  # Gmail and Yahoo: stay under 0.3%
BOUNCE_REVIEW = 0.05  # Amazon SES reviews an account at 5% bounces ...
BOUNCE_STOP = 0.10  # ... and pauses it at 10%
COUNTED = ("complaint", "hard", REFUSED)  # hard bounces: in a DSN, or at the relay


@dataclass(frozen=True)
class Rates:
    sent: int
    complaints: int
    hard_bounces: int

    @property
    def complaint_rate(self) -> float | None:
        return self.complaints / self.sent if self.sent else None

    @property
    def hard_bounce_rate(self) -> float | None:
        return self.hard_bounces / self.sent if self.sent else None

    def verdict(self) -> tuple[Literal["ok", "warn", "fail"], str]:
        """("ok" | "warn" | "fail", the words): the worse of the two rates."""
        if not self.sent:
            return "warn", "no message sent in the period: nothing to judge"
        complaints, bounces = self.complaint_rate or 0.0, self.hard_bounce_rate or 0.0
        said = (f"complaints {complaints:.2%} ({self.complaints} of {self.sent}; Gmail and "
                f"Yahoo: under {COMPLAINT_LIMIT:.1%}, aim under {COMPLAINT_AIM:.1%}), hard "
                f"bounces {bounces:.2%} ({self.hard_bounces}; SES reviews at "
                f"{BOUNCE_REVIEW:.0%}, pauses at {BOUNCE_STOP:.0%})")  # fmt: skip
        if complaints >= COMPLAINT_LIMIT or bounces >= BOUNCE_STOP:
            return "fail", said
        if complaints >= COMPLAINT_AIM or bounces >= BOUNCE_REVIEW:
            return "warn", said
        return "ok", said

    def as_dict(self) -> dict[str, Any]:
        status, said = self.verdict()
        return {
            "sent": self.sent, "complaints": self.complaints,
            "complaint_rate": self.complaint_rate, "hard_bounces": self.hard_bounces,
            "hard_bounce_rate": self.hard_bounce_rate,
            "thresholds": {"complaint_aim": COMPLAINT_AIM, "complaint_limit": COMPLAINT_LIMIT,
                           "hard_bounce_review": BOUNCE_REVIEW, "hard_bounce_stop": BOUNCE_STOP},
            "status": status, "verdict": said,
        }  # fmt: skip


def period_rates(connection: Connection, period: Period) -> Rates:
    """The sender's rates over `period`."""
    sent = select(func.count()).where(outbox.c.status == "sent",
                                      *period.holds(outbox.c.sent_at))  # fmt: skip
    returned = (
        select(returned_messages.c.classification, func.count().label("n"))
        .where(returned_messages.c.classification.in_(COUNTED),
               *period.holds(returned_messages.c.received_at))
        .group_by(returned_messages.c.classification)
    )  # fmt: skip
    rolled = (
        select(returned_rollups.c.classification, func.sum(returned_rollups.c.events).label("n"))
        .where(returned_rollups.c.classification.in_(COUNTED),
               *_days_starting_in(period))
        .group_by(returned_rollups.c.classification)
    )  # fmt: skip
    counts: Counter[str] = Counter()
    for row in [*connection.execute(returned), *connection.execute(rolled)]:
        counts[row.classification] += int(row.n)
    # A message refused at the relay was sent as far as the receiver is concerned.
    return Rates(int(connection.scalar(sent) or 0) + counts[REFUSED], counts["complaint"],
                 counts["hard"] + counts[REFUSED])  # fmt: skip



def _days_starting_in(period: Period) -> list[ColumnElement[bool]]:
    """The rolled-up days (retention) counted in `period`: those whose UTC midnight is in it, so
    a period of whole days counts exactly what it counted before the roll-up."""

    def first_day_from(moment: datetime) -> str:
        day = moment.astimezone(UTC)
        midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight.date() + timedelta(days=1 if midnight < day else 0)).isoformat()

    found = []
    if period.since is not None:
        found.append(returned_rollups.c.day >= first_day_from(period.since))
    if period.until is not None:
        found.append(returned_rollups.c.day < first_day_from(period.until))
    return found
