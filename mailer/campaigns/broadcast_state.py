"""Where a broadcast stands, as plain decisions over plain values: when each zone's send time
falls, and whether the broadcast is scheduled, sending, sent or stale (never sent), and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mailer.send_times import parse_send_at

LATE_LIMIT = timedelta(days=1)  # a broadcast found more than this late is not sent at all
WAITING = ("queued", "sending", "deferred")  # outbox statuses not yet settled


@dataclass(frozen=True)
class BroadcastRun:
    """One run of a broadcast: `sending` (some zones queued), `queued` (every zone) or
    `stale` (found too late: never sent)."""

    cycle: int
    state: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class BroadcastState:
    state: str  # scheduled | sending | sent | stale
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def send_instants(send_at: str, zones: list[str]) -> dict[str | None, datetime]:
    """When the broadcast is due: one instant for an absolute send_at, one per zone of the
    list's members for a local one; empty while the list has no members."""
    moment, local = parse_send_at(send_at)
    if not zones:
        return {}
    if not local:
        return {None: moment}
    return {zone: moment.replace(tzinfo=ZoneInfo(zone)) for zone in zones}


def is_stale(instants: dict[str | None, datetime], now: datetime) -> bool:
    return bool(instants) and min(instants.values()) + LATE_LIMIT < now


def broadcast_state(send_at: str, list_name: str, zones: list[str], run: BroadcastRun | None,
                    messages: dict[str, int], now: datetime) -> BroadcastState:  # fmt: skip
    """Where the broadcast of `send_at` to `list_name` (whose members live in `zones`) stands,
    given its run (None before its first due tick) and that run's outbox rows by status."""
    queued = sum(messages.values())
    if run is None:
        return _before_run(send_at, list_name, zones, now)
    if run.state == "stale":
        return BroadcastState("stale", f"never sent: first due tick at {_at(run.started_at)} "
                              f"was more than {_days()} after {send_at}")  # fmt: skip
    waiting = sum(messages.get(status, 0) for status in WAITING)
    if run.state == "sending":
        last = max(send_instants(send_at, zones).values(), default=run.started_at)
        return BroadcastState("sending", f"{queued} messages queued in the zones reached so "
                              f"far; the last zone at {_at(last)}")  # fmt: skip
    if waiting:
        return BroadcastState("sending", f"{waiting} of {queued} messages still to deliver")
    finished = _at(run.finished_at or run.started_at)
    return BroadcastState("sent", f"{queued} messages queued by {finished}, all delivered "
                          "or settled")  # fmt: skip


def _before_run(send_at: str, list_name: str, zones: list[str], now: datetime) -> BroadcastState:
    instants = send_instants(send_at, zones)
    if not instants:
        moment, local = parse_send_at(send_at)
        earliest = moment.replace(tzinfo=ZoneInfo("Etc/GMT-14")) if local else moment
        if earliest + LATE_LIMIT < now:
            return BroadcastState("stale", f"never sent: list '{list_name}' had no members "
                                  f"by {send_at}")  # fmt: skip
        return BroadcastState("scheduled", f"waits for members: list '{list_name}' is empty "
                              f"(send_at {send_at})")  # fmt: skip
    first, last = min(instants.values()), max(instants.values())
    if is_stale(instants, now):
        return BroadcastState("stale", f"never sent: its time ({_at(first)}) was more than "
                              f"{_days()} ago when no tick had yet seen it")  # fmt: skip
    if first <= now:
        return BroadcastState("scheduled", f"due since {_at(first)}: goes out at the next tick")
    zones_note = f", the last zone at {_at(last)}" if last != first else ""
    return BroadcastState("scheduled", f"goes out at {_at(first)}{zones_note}")


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _days() -> str:
    return f"{LATE_LIMIT.days} day" + ("s" if LATE_LIMIT.days != 1 else "")
