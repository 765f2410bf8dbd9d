"""Where a broadcast stands, as plain decisions over plain values: when each zone's send time
falls, which zones a tick queues or finds stale, what a run sends (to notice an edit while it
is sending), and whether the broadcast is scheduled, sending, held, sent or stale, and why."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mailer.config import Campaign, Settings
from mailer.send_times import parse_send_at

LATE_LIMIT = timedelta(days=1)  # a zone found more than this late is not sent at all
WAITING = ("queued", "sending", "deferred")  # outbox statuses not yet settled
EVERY_ZONE = "*"  # the one zone of an absolute broadcast
# Where a local time comes first (UTC+14) and last (UTC-12): a run opens at the first, and no
# zone can be due after the last.
FIRST_ZONE, LAST_ZONE = ZoneInfo("Etc/GMT-14"), ZoneInfo("Etc/GMT+12")


@dataclass(frozen=True)
class BroadcastRun:
    """One run of a broadcast: `sending` until no zone can still come, then `queued` (some
    zone was), `stale` (every zone found too late) or `empty` (nobody in the list in time)."""

    cycle: int
    state: str
    started_at: datetime
    finished_at: datetime | None
    seen_until: datetime | None = None  # the last tick that looked at it
    sends: dict[str, Any] | None = None  # what it sends, as it began (None: begun before 0010)

    @property
    def open(self) -> bool:
        return self.state == "sending"


@dataclass(frozen=True)
class ZoneDecision:
    zone: str
    state: str  # queued | stale
    decided_at: datetime
    messages: int


@dataclass(frozen=True)
class BroadcastState:
    state: str  # scheduled | sending | held | sent | stale
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def send_instants(send_at: str, zones: list[str]) -> dict[str, datetime]:
    """When the broadcast is due: one instant (zone `*`) for an absolute send_at, one per zone
    of the list's members for a local one; empty while the list has no members."""
    moment, local = parse_send_at(send_at)
    if not zones:
        return {}
    if not local:
        return {EVERY_ZONE: moment}
    return {zone: moment.replace(tzinfo=ZoneInfo(zone)) for zone in zones}


def first_and_last(send_at: str) -> tuple[datetime, datetime]:
    """The earliest and the latest moment any zone's send time can fall."""
    moment, local = parse_send_at(send_at)
    if not local:
        return moment, moment
    return moment.replace(tzinfo=FIRST_ZONE), moment.replace(tzinfo=LAST_ZONE)


def zones_due(instants: dict[str, datetime], decided: Collection[str],
              seen_until: datetime | None, now: datetime) -> dict[str, str]:  # fmt: skip
    """The zones a tick at `now` decides: `queued` once their time has come, `stale` when it
    came more than LATE_LIMIT ago. Left out: a zone decided already (a zone goes once, to who
    is in it then), and a zone whose time came before the last tick looked (`seen_until`) with
    nobody in it: who joined it since would get a 09:00 broadcast in the afternoon."""
    due = {}
    for zone, instant in instants.items():
        if zone in decided or instant > now:
            continue
        if seen_until is not None and instant <= seen_until:
            continue
        due[zone] = "stale" if instant + LATE_LIMIT < now else "queued"
    return due


def pending_zones(instants: dict[str, datetime], decided: Collection[str],
                  seen_until: datetime | None) -> list[str]:  # fmt: skip
    """The members' zones still to decide (not decided, and not passed with nobody in them)."""
    return [zone for zone, instant in instants.items()
            if zone not in decided and (seen_until is None or instant > seen_until)]  # fmt: skip


def is_over(send_at: str, pending: list[str], now: datetime) -> bool:
    """No zone can still be sent: the last zone's time has come and none is pending, or it came
    more than LATE_LIMIT ago."""
    last = first_and_last(send_at)[1]
    return now > last + LATE_LIMIT or (now >= last and not pending)


def what_it_sends(settings: Settings, campaign: Campaign) -> dict[str, Any]:
    """What one run must not mix: the message, its variants, and who it goes to (the segment's
    expression too: an edited segment would drop or add people in the zones still to come)."""
    segment = campaign.segment or ""
    return {
        "subject": campaign.subject,
        "template": campaign.template,
        "preheader": campaign.preheader,
        "variants": {
            label: _sent_variant(variant.model_dump(mode="json"))
            for label, variant in sorted(campaign.variants.items())
        },
        "segment": {"name": segment, "expression": settings.segments.get(segment)},
        "list": campaign.list_name,
        "ab": campaign.ab.model_dump(mode="json") if campaign.ab is not None else None,
    }


def _sent_variant(fields: dict[str, Any]) -> dict[str, Any]:
    """A variant as runs begun before from_name existed kept it: unset new fields left out,
    so that upgrading does not read as an edit and hold them."""
    return {field: value for field, value in fields.items()
            if value is not None or field not in ("from_name", "send_at")}  # fmt: skip


def edited(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """The fields of what a run sends that differ from what it began with."""
    if before is None:
        return []
    return [field for field, value in after.items() if before.get(field) != value]


def edited_why(edits: list[str], queued_zones: int, waiting: str) -> str:
    return (f"{', '.join(edits)} edited after sending began ({_zones(queued_zones)} queued, "
            f"{waiting}): restore the settings, or copy the broadcast under a new "
            "name")  # fmt: skip


def send_at_changed_why(key: str, queued_zones: int) -> str:
    over = first_and_last(key)[1] + LATE_LIMIT
    return (f"send_at changed while the run of {shown_send_at(key)} was sending "
            f"({_zones(queued_zones)} queued): restore it, or copy the broadcast under a new "
            f"name (the new send_at waits until that run is over, by {_at(over)})")  # fmt: skip


def broadcast_state(send_at: str, list_name: str, zones: list[str], run: BroadcastRun | None,
                    decisions: list[ZoneDecision], messages: dict[str, int], held: str | None,
                    now: datetime) -> BroadcastState:  # fmt: skip
    """Where the broadcast of `send_at` to `list_name` (whose members live in `zones`) stands,
    given its run (None before its first tick), the zones decided, the run's outbox rows by
    status, and why it is held (None when it is not)."""
    if held is not None:
        return BroadcastState("held", held)
    if run is None:
        return _before_run(send_at, list_name, zones, now)
    queued = [decision for decision in decisions if decision.state == "queued"]
    stale = _stale_note(send_at, decisions)
    pending = pending_zones(send_instants(send_at, zones), {d.zone for d in decisions},
                            run.seen_until) if run.open else []  # fmt: skip
    if run.state == "stale" or (decisions and not queued and not pending):
        first = min((decision.decided_at for decision in decisions), default=run.started_at)
        return BroadcastState("stale", f"never sent: first due tick at {_at(first)} was more "
                              f"than {_days()} after {send_at}")  # fmt: skip
    if run.state == "empty":
        return BroadcastState("stale", f"never sent: list '{list_name}' had no members by "
                              f"{send_at}")  # fmt: skip
    total = sum(messages.values())
    if pending and not queued:
        return _before_run(send_at, list_name, pending, now)
    if run.open and not queued:
        last = first_and_last(send_at)[1]
        return BroadcastState("scheduled", f"waits for members in the zones still ahead (the "
                              f"last at {_at(last)})")  # fmt: skip
    if pending:
        last = max(send_instants(send_at, pending).values())
        return BroadcastState("sending", f"{total} messages queued in {_zones(len(queued))} so "
                              f"far; the last zone at {_at(last)}{stale}")  # fmt: skip
    waiting = sum(messages.get(status, 0) for status in WAITING)
    if waiting:
        return BroadcastState("sending", f"{waiting} of {total} messages still to deliver{stale}")
    finished = _at(max((d.decided_at for d in queued), default=run.finished_at or run.started_at))
    local = queued and queued[0].zone != EVERY_ZONE
    reached = f"sent to {_zones(len(queued))}: " if local else ""
    return BroadcastState("sent", f"{reached}{total} messages queued by {finished}, all "
                          f"delivered or settled{stale}")  # fmt: skip


def _before_run(send_at: str, list_name: str, zones: list[str], now: datetime) -> BroadcastState:
    instants = send_instants(send_at, zones)
    if not instants:
        earliest = first_and_last(send_at)[0]
        if earliest + LATE_LIMIT < now:
            return BroadcastState("stale", f"never sent: list '{list_name}' had no members "
                                  f"by {send_at}")  # fmt: skip
        return BroadcastState("scheduled", f"waits for members: list '{list_name}' is empty "
                              f"(send_at {send_at})")  # fmt: skip
    first, last = min(instants.values()), max(instants.values())
    if last + LATE_LIMIT < now:
        return BroadcastState("stale", f"never sent: its time ({_at(first)}) was more than "
                              f"{_days()} ago when no tick had yet seen it")  # fmt: skip
    if first <= now:
        return BroadcastState("scheduled", f"due since {_at(first)}: goes out at the next tick")
    zones_note = f", the last zone at {_at(last)}" if last != first else ""
    return BroadcastState("scheduled", f"goes out at {_at(first)}{zones_note}")


def _stale_note(send_at: str, decisions: list[ZoneDecision]) -> str:
    """`; 1 zone stale (Pacific/Kiritimati: first due tick 30h late)`, or nothing."""
    stale = sorted((d for d in decisions if d.state == "stale" and d.zone != EVERY_ZONE),
                   key=lambda decision: decision.zone)  # fmt: skip
    if not stale:
        return ""
    instants = send_instants(send_at, [decision.zone for decision in stale])
    late = ", ".join(f"{d.zone}: first due tick "
                     f"{int((d.decided_at - instants[d.zone]).total_seconds() // 3600)}h late"
                     for d in stale)  # fmt: skip
    return f"; {_zones(len(stale))} stale ({late})"


def shown_send_at(key: str) -> str:
    """A run's key as marketers write send_at: `2026-11-24T09:00 local`, `2026-11-24T09:00Z`."""
    moment, local = parse_send_at(key)
    if local:
        return f"{moment:%Y-%m-%dT%H:%M} local"
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M}Z"


def _zones(count: int) -> str:
    return f"{count} zone" + ("s" if count != 1 else "")


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _days() -> str:
    return f"{LATE_LIMIT.days} day" + ("s" if LATE_LIMIT.days != 1 else "")
