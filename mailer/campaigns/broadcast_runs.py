"""A broadcast's runs as the database remembers them: one per (campaign, send_at), so a run
that is done stays done, and a corrected send_at or a reused name is a new run; and each run's
zones, each queued (or found stale) once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from mailer.campaigns.ab_tests import awaiting_winner, test_state
from mailer.campaigns.broadcast_state import (
    WAITING,
    BroadcastRun,
    BroadcastState,
    ZoneDecision,
    broadcast_state,
    edited,
    edited_why,
    is_over,
    pending_zones,
    send_at_changed_why,
    send_instants,
    what_it_sends,
)
from mailer.campaigns.progress import zones_in_use
from mailer.campaigns.send_time_tests import GROUP, send_times
from mailer.config import Campaign, Settings
from mailer.send_times import send_at_key
from mailer.store.tables import broadcast_runs, broadcast_zones, outbox
from mailer.store.upsert import upsert


def find_run(connection: Connection, name: str, key: str) -> BroadcastRun | None:
    row = connection.execute(
        select(broadcast_runs).where(broadcast_runs.c.campaign == name,
                                     broadcast_runs.c.send_at == key)
    ).one_or_none()  # fmt: skip
    return None if row is None else _run(row)


def _run(row: Any) -> BroadcastRun:
    return BroadcastRun(row.cycle, row.state, row.started_at, row.finished_at, row.seen_until,
                        row.sends)  # fmt: skip


def start_run(connection: Connection, name: str, key: str, now: datetime,
              sends: dict[str, Any]) -> BroadcastRun:  # fmt: skip
    """The run of (name, key), started now unless another tick started it first."""
    last = connection.scalar(
        select(func.max(broadcast_runs.c.cycle)).where(broadcast_runs.c.campaign == name)
    )
    row = {"campaign": name, "send_at": key, "cycle": 0 if last is None else last + 1,
           "state": "sending", "started_at": now, "sends": sends}  # fmt: skip
    upsert(connection, broadcast_runs, [row], keys=("campaign", "send_at"))
    run = find_run(connection, name, key)
    assert run is not None
    return run


def looked(connection: Connection, name: str, key: str, now: datetime,
           sends: dict[str, Any] | None = None) -> None:  # fmt: skip
    """A tick looked at the run at `now` (and, for a run begun before what it sends was kept,
    took the settings as they are now)."""
    values: dict[str, Any] = {"seen_until": now}
    if sends is not None:
        values["sends"] = sends
    connection.execute(
        update(broadcast_runs)
        .where(broadcast_runs.c.campaign == name, broadcast_runs.c.send_at == key)
        .values(**values)
    )


def finish_run(connection: Connection, name: str, key: str, now: datetime) -> None:
    """Close the run: `queued` if some zone was, `stale` if its zones were all found too late,
    `empty` if nobody was in the list in time."""
    states = set(connection.scalars(
        select(broadcast_zones.c.state).distinct()
        .where(broadcast_zones.c.campaign == name, broadcast_zones.c.send_at == key)
    ))  # fmt: skip
    state = "queued" if "queued" in states else "stale" if states else "empty"
    connection.execute(
        update(broadcast_runs)
        .where(broadcast_runs.c.campaign == name, broadcast_runs.c.send_at == key)
        .values(state=state, finished_at=now)
    )


def decisions(connection: Connection, name: str, key: str) -> list[ZoneDecision]:
    """The run's zones decided (a send-time test's later groups are not zones)."""
    rows = connection.execute(
        select(broadcast_zones)
        .where(broadcast_zones.c.campaign == name, broadcast_zones.c.send_at == key,
               ~broadcast_zones.c.zone.startswith(GROUP))
    )  # fmt: skip
    return [ZoneDecision(row.zone, row.state, row.decided_at, row.messages) for row in rows]


def decide_zone(connection: Connection, name: str, key: str, zone: str, state: str,
                now: datetime, messages: int) -> None:  # fmt: skip
    row = {"campaign": name, "send_at": key, "zone": zone, "state": state, "decided_at": now,
           "messages": messages}  # fmt: skip
    upsert(connection, broadcast_zones, [row], keys=("campaign", "send_at", "zone"))


def earlier_runs(connection: Connection, name: str, key: str) -> list[tuple[str, BroadcastRun]]:
    """The campaign's runs still sending under another send_at, with their keys."""
    rows = connection.execute(
        select(broadcast_runs)
        .where(broadcast_runs.c.campaign == name, broadcast_runs.c.send_at != key,
               broadcast_runs.c.state == "sending")
    )  # fmt: skip
    return [(row.send_at, _run(row)) for row in rows]


def run_is_over(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                key: str, run: BroadcastRun, now: datetime) -> bool:  # fmt: skip
    """No zone of the run of (name, key) can still be sent."""
    zones = zones_in_use(connection, campaign.list_name, settings.default_timezone)
    decided = {decision.zone for decision in decisions(connection, name, key)}
    pending = pending_zones(send_instants(key, zones), decided, run.seen_until)
    return is_over(key, pending, now)


def why_held(connection: Connection, settings: Settings, name: str, campaign: Campaign,
             now: datetime) -> str | None:  # fmt: skip
    """Why the broadcast sends nothing more until its settings are restored, or None: its
    send_at changed while a run was sending, or what it sends was edited while its run is
    sending (or its messages still wait in the outbox)."""
    assert campaign.send_at is not None
    key = send_at_key(campaign.send_at)
    for other, earlier in earlier_runs(connection, name, key):
        if not run_is_over(connection, settings, name, campaign, other, earlier, now):
            return send_at_changed_why(other, _queued_zones(connection, name, other))
    run = find_run(connection, name, key)
    if run is None:
        return None
    edits = edited(run.sends, what_it_sends(settings, campaign))
    if not edits:
        return None
    if run.open:
        zones = zones_in_use(connection, campaign.list_name, settings.default_timezone)
        decided = {decision.zone for decision in decisions(connection, name, key)}
        pending = pending_zones(send_instants(campaign.send_at, zones), decided, run.seen_until)
        waiting = f"{len(pending)} waiting"
    else:
        undelivered = sum(count for status, count in _messages(connection, name, run).items()
                          if status in WAITING)  # fmt: skip
        if awaiting_winner(connection, campaign, name, key) and send_times(campaign):
            waiting = "the send-time test's groups or decision still to come"
        elif awaiting_winner(connection, campaign, name, key):
            waiting = "the A/B test's winner still to send"
        elif not undelivered:
            return None  # done and delivered: the edit changes nothing already sent
        else:
            waiting = f"{undelivered} messages not yet delivered"
    return edited_why(edits, _queued_zones(connection, name, key), waiting)


def _queued_zones(connection: Connection, name: str, key: str) -> int:
    return sum(1 for decision in decisions(connection, name, key) if decision.state == "queued")


def _messages(connection: Connection, name: str, run: BroadcastRun) -> dict[str, int]:
    """The run's outbox rows by status."""
    return {row.status: row.messages for row in connection.execute(
        select(outbox.c.status, func.count().label("messages"))
        .where(outbox.c.campaign == name, outbox.c.cycle == run.cycle)
        .group_by(outbox.c.status)
    )}  # fmt: skip


def held_broadcasts(connection: Connection, settings: Settings, now: datetime) -> dict[str, str]:
    """Each broadcast held by an edit while it was sending, and why."""
    held = {}
    for name, campaign in settings.campaigns.items():
        if campaign.kind == "broadcast" and campaign.send_at is not None:
            why = why_held(connection, settings, name, campaign, now)
            if why is not None:
                held[name] = why
    return held


def broadcast_states(connection: Connection, settings: Settings,
                     now: datetime) -> dict[str, BroadcastState]:  # fmt: skip
    """Each broadcast of settings: scheduled, sending, held, sent or stale, and why."""
    states = {}
    for name, campaign in settings.campaigns.items():
        if campaign.kind != "broadcast" or campaign.send_at is None:
            continue
        key = send_at_key(campaign.send_at)
        run = find_run(connection, name, key)
        messages = _messages(connection, name, run) if run is not None else {}
        zones = zones_in_use(connection, campaign.list_name, settings.default_timezone)
        held = why_held(connection, settings, name, campaign, now)
        state = broadcast_state(campaign.send_at, campaign.list_name, zones, run,
                                decisions(connection, name, key), messages, held,
                                now)  # fmt: skip
        if campaign.ab is not None and held is None:
            state = test_state(connection, campaign, name, key, state, sum(messages.values()))
        states[name] = state
    return states
