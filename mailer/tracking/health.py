"""Is mailer healthy? A pure verdict over what /healthz gathered: the relay's standing, the
paused campaigns, and the opens and clicks waiting for the event writer. Each problem is a
Reason a monitoring system can read (`check`, plus the campaign where one is named)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from mailer.delivery.relay_watch import FAILING_AFTER, RelayStanding
from mailer.returns.breakers import Reading

Check = Literal[
    "database_unreachable",
    "relay_failing",
    "relay_down",
    "campaign_paused",
    "event_writer_behind",
    "returns_rate_high",
]


@dataclass(frozen=True)
class Reason:
    check: Check
    message: str
    campaign: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class EventBacklog:
    """The opens and clicks waiting in memory for the event writer."""

    waiting: int
    high_water: int  # from this many on, new hits wait for a write (back-pressure)
    oldest: datetime | None  # when the oldest waiting one happened
    every: timedelta  # the writer's flush interval
    last_failure: str | None  # why the last write failed; None when it succeeded


def writer_behind(backlog: EventBacklog, now: datetime) -> str | None:
    """Why the event writer is behind, or None when it keeps up."""
    waiting = f"{backlog.waiting} opens and clicks wait in memory"
    if backlog.last_failure is not None:
        return f"the last write of opens and clicks failed ({backlog.last_failure}); {waiting}"
    if backlog.waiting >= backlog.high_water:
        return f"{waiting}: new ones wait for the database, which is slower than the traffic"
    late = max(10 * backlog.every, timedelta(seconds=10))
    if backlog.oldest is not None and now - backlog.oldest > late:
        age = int((now - backlog.oldest).total_seconds())
        return f"{waiting}, the oldest for {age} s (written every {backlog.every})"
    return None


def reasons(
    relay: RelayStanding | None,
    paused: dict[str, str],
    backlog: EventBacklog,
    now: datetime,
    rates: Sequence[Reading] = (),
    relays_down: Sequence[str] = (),
) -> list[Reason]:
    """Everything degraded, in the order an operator would fix it."""
    found = [Reason("relay_down", news) for news in relays_down]  # a fallback stands in
    if relay is not None and relay.failing and not relays_down:  # said above, better
        found.append(Reason("relay_failing", relay_failing(relay)))
    found += [
        Reason(
            "campaign_paused",
            f"campaign {name} is paused: {why}; resume it with `mailer campaign resume {name}`",
            name,
        )
        for name, why in sorted(paused.items())
    ]
    # A campaign its breaker paused is named above already, with this reason.
    found += [
        Reason("returns_rate_high", f"{rate.scope}: {rate.reason}", rate.campaign)
        for rate in rates
        if rate.level == "warn" or rate.campaign not in paused
    ]
    if (behind := writer_behind(backlog, now)) is not None:
        found.append(Reason("event_writer_behind", behind))
    return found


def relay_failing(relay: RelayStanding) -> str:
    """What /healthz says of a failing relay: the streak this process saw, or the down state
    another process recorded (delivery/relay_watch.py, recorded_down)."""
    if relay.down_since is not None:
        return (f"the relay is down since {relay.down_since:%Y-%m-%d %H:%M:%S} UTC: "
                f"{relay.failures_in_row} attempts failed (the first and each probe since, by "
                f"any process); last: {relay.last_failure}")  # fmt: skip
    return (f"the relay failed the last {relay.failures_in_row} attempts (from {FAILING_AFTER} "
            f"in a row it is failing); last: {relay.last_failure}")  # fmt: skip


def health_body(
    found: list[Reason], backlog: EventBacklog, relay: RelayStanding | None
) -> dict[str, Any]:
    """The machine-readable answer of /healthz."""
    return {
        "status": "degraded" if found else "ok",
        "reasons": [reason.as_dict() for reason in found],
        "relay": "not used yet" if relay is None else "failing" if relay.failing else "ok",
        "buffered": backlog.waiting,
    }
