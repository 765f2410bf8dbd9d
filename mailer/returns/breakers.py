"""Circuit breakers: sending stops on its own when too much comes back. Per campaign and for
the whole sender, the complaint rate and the hard bounce rate over a sliding window
([returns] breaker_window): past the warning threshold a warning is logged and /healthz shows
it; past the stop threshold the campaign is paused (the sender's: every campaign), with the
reason, as a relay that refuses message after message pauses it (delivery/pauses.py).

A rate is what came back in the window over what was sent in it (Gmail's spam rate: reports
on a day over messages delivered that day), judged only from breaker_minimum messages sent. A
message refused at the relay as an unknown user counts as sent and hard-bounced."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from mailer.clock import Clock
from mailer.config import Settings
from mailer.delivery.pauses import pause
from mailer.durations import format_duration
from mailer.logs import logger
from mailer.store.engine import reading as reading_from
from mailer.store.tables import outbox, returned_messages

Kind = Literal["complaint", "hard"]
SENDER = None  # the campaign of a reading about everything sent
KINDS: tuple[Kind, ...] = ("complaint", "hard")
NAMES = {"complaint": "complaint rate", "hard": "hard bounce rate"}
# returned_messages.classification of a hard bounce at the relay (returns/refusals.py): a hard
# bounce of a message sent, though the outbox says failed.
REFUSED = "refused"


@dataclass(frozen=True)
class Reading:
    """One rate past a threshold: of a campaign, or of the sender (campaign None)."""

    campaign: str | None
    kind: Kind
    returned: int
    sent: int
    level: Literal["warn", "stop"]
    threshold: float  # the one crossed
    window: timedelta

    @property
    def rate(self) -> float:
        return self.returned / self.sent

    @property
    def reason(self) -> str:
        """`complaint rate 0.6% over 24h (stop at 0.3%): 6 of 1000 messages sent`."""
        return (f"{NAMES[self.kind]} {self.rate:.2%} over {format_duration(self.window)} "
                f"({self.level} at {self.threshold:.2%}): {self.returned} of {self.sent} "
                "messages sent")  # fmt: skip

    @property
    def scope(self) -> str:
        return "the sender" if self.campaign is None else f"campaign {self.campaign}"


@dataclass(frozen=True)
class Window:
    """What was sent and what came back in the breaker window ending now, per campaign."""

    sent: Counter[str | None]  # messages sent (and refused at the relay), per campaign
    returned: Counter[tuple[str | None, str]]  # (campaign, "complaint" | "hard")

    def count(self, scope: str | None, kind: Kind) -> tuple[int, int]:
        """(returned, sent) of `scope`: a campaign, or SENDER for everything."""
        returned = sum(n for (name, k), n in self.returned.items()
                       if k == kind and (scope is SENDER or name == scope))  # fmt: skip
        return returned, self.sent_in(scope)

    def sent_in(self, scope: str | None) -> int:
        return self.sent.total() if scope is SENDER else self.sent[scope]


def window(connection: Connection, settings: Settings, now: datetime) -> Window:
    """The counts every rate of the breakers is judged from (also in /metrics)."""
    since = now - settings.returns.breaker_window
    sent_query = select(outbox.c.campaign, func.count().label("n")).where(
        outbox.c.sent_at > since, outbox.c.sent_at <= now
    )
    returned_query = select(
        returned_messages.c.campaign, returned_messages.c.classification, func.count().label("n")
    ).where(
        returned_messages.c.received_at > since,
        returned_messages.c.received_at <= now,
        returned_messages.c.classification.in_(("complaint", "hard", REFUSED)),
    )  # fmt: skip
    sent: Counter[str | None] = Counter({row.campaign: row.n for row in connection.execute(
        sent_query.group_by(outbox.c.campaign))})  # fmt: skip
    returned: Counter[tuple[str | None, str]] = Counter()
    for row in connection.execute(returned_query.group_by(returned_messages.c.campaign,
                                                          returned_messages.c.classification)):
        if row.classification == REFUSED:
            returned[row.campaign, "hard"] += row.n
            sent[row.campaign] += row.n
        else:
            returned[row.campaign, row.classification] += row.n
    return Window(sent, returned)


def readings(connection: Connection, settings: Settings, now: datetime,
             campaign: str | None = None) -> list[Reading]:  # fmt: skip
    """Every rate past a threshold now: the sender's, and each campaign's (only `campaign`'s
    when one is named)."""
    counted = window(connection, settings, now)
    scopes: list[str | None] = [SENDER]
    scopes += [campaign] if campaign is not None else sorted(
        {c for c, _ in counted.returned if c})  # fmt: skip
    found = []
    for scope in scopes:
        for kind in KINDS:
            count, total = counted.count(scope, kind)
            if (judged := _judge(settings, scope, kind, count, total)) is not None:
                found.append(judged)
    return found


def _judge(settings: Settings, scope: str | None, kind: Kind, count: int,
           total: int) -> Reading | None:  # fmt: skip
    policy = settings.returns
    if count == 0 or total < policy.breaker_minimum:
        return None
    warn, stop = ((policy.complaint_warn, policy.complaint_stop) if kind == "complaint"
                  else (policy.hard_bounce_warn, policy.hard_bounce_stop))  # fmt: skip
    rate = count / total
    if rate >= stop:
        return Reading(scope, kind, count, total, "stop", stop, policy.breaker_window)
    if rate >= warn:
        return Reading(scope, kind, count, total, "warn", warn, policy.breaker_window)
    return None


def check_breakers(connection: Connection, settings: Settings, campaign: str,
                   now: datetime) -> list[Reading]:  # fmt: skip
    """After a hard bounce or complaint of `campaign` (the only returns that raise a rate):
    warn, or pause the campaign, or pause every campaign when it is the sender's rate."""
    found = readings(connection, settings, now, campaign)
    paused_for: set[str] = set()
    for reading in found:
        if reading.level == "warn":
            logger.warning(f"{reading.scope}: {reading.reason}")
            continue
        names = list(settings.campaigns) if reading.campaign is None else [reading.campaign]
        for name in names:
            if name in settings.campaigns and name not in paused_for:
                paused_for.add(name)
                pause(connection, settings, name, _pause_reason(reading), now)
        logger.error(
            f"{reading.scope}: {reading.reason}; paused "
            f"{'every campaign' if reading.campaign is None else reading.scope}"
        )
    return found


def _pause_reason(reading: Reading) -> str:
    whose = "" if reading.campaign is not None else "the sender's "
    return f"{whose}{reading.reason}"


RATE_HELP = ("The complaint and hard bounce rates the circuit breakers judge, over [returns] "
             "breaker_window; campaign empty: the whole sender")
SENT_HELP = "Messages sent in [returns] breaker_window (what the rates are of); campaign empty: all"


class ReturnGauges(Collector):
    """mailer_returns_rate{campaign, kind} and mailer_returns_sent{campaign}, for the sender
    (campaign "") and every campaign of settings, read from the database when scraped."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock

    def collect(self) -> Iterator[Metric]:
        with reading_from(self.engine) as connection:
            counted = window(connection, self.settings, self.clock.now())
        rates = GaugeMetricFamily("mailer_returns_rate", RATE_HELP, labels=["campaign", "kind"])
        sent = GaugeMetricFamily("mailer_returns_sent", SENT_HELP, labels=["campaign"])
        for scope in [SENDER, *self.settings.campaigns]:
            label = scope or ""
            for kind in KINDS:
                returned, total = counted.count(scope, kind)
                rates.add_metric([label, "hard_bounce" if kind == "hard" else kind],
                                 returned / total if total else 0.0)  # fmt: skip
            sent.add_metric([label], counted.sent_in(scope))
        yield rates
        yield sent
