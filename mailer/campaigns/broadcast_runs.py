"""A broadcast's runs as the database remembers them: one per (campaign, send_at), so a run
that is done stays done, and a corrected send_at or a reused name is a new run."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select, update

from mailer.campaigns.broadcast_state import BroadcastRun, BroadcastState, broadcast_state
from mailer.campaigns.progress import zones_in_use
from mailer.config import Settings
from mailer.send_times import send_at_key
from mailer.store.tables import broadcast_runs, outbox
from mailer.store.upsert import upsert


def find_run(connection: Connection, name: str, key: str) -> BroadcastRun | None:
    row = connection.execute(
        select(broadcast_runs).where(broadcast_runs.c.campaign == name,
                                     broadcast_runs.c.send_at == key)
    ).one_or_none()  # fmt: skip
    if row is None:
        return None
    return BroadcastRun(row.cycle, row.state, row.started_at, row.finished_at)


def start_run(connection: Connection, name: str, key: str, state: str,
              now: datetime) -> BroadcastRun:  # fmt: skip
    """The run of (name, key), started now in `state` unless another tick started it first."""
    last = connection.scalar(
        select(func.max(broadcast_runs.c.cycle)).where(broadcast_runs.c.campaign == name)
    )
    row = {"campaign": name, "send_at": key, "cycle": 0 if last is None else last + 1,
           "state": state, "started_at": now,
           "finished_at": now if state != "sending" else None}  # fmt: skip
    upsert(connection, broadcast_runs, [row], keys=("campaign", "send_at"))
    run = find_run(connection, name, key)
    assert run is not None
    return run


def finish_run(connection: Connection, name: str, key: str, state: str, now: datetime) -> None:
    connection.execute(
        update(broadcast_runs)
        .where(broadcast_runs.c.campaign == name, broadcast_runs.c.send_at == key)
        .values(state=state, finished_at=now)
    )


def broadcast_states(connection: Connection, settings: Settings,
                     now: datetime) -> dict[str, BroadcastState]:  # fmt: skip
    """Each broadcast of settings: scheduled, sending, sent or stale, and why."""
    states = {}
    for name, campaign in settings.campaigns.items():
        if campaign.kind != "broadcast" or campaign.send_at is None:
            continue
        run = find_run(connection, name, send_at_key(campaign.send_at))
        messages: dict[str, int] = {}
        if run is not None:
            messages = {row.status: row.messages for row in connection.execute(
                select(outbox.c.status, func.count().label("messages"))
                .where(outbox.c.campaign == name, outbox.c.cycle == run.cycle)
                .group_by(outbox.c.status)
            )}  # fmt: skip
        zones = zones_in_use(connection, campaign.list_name, settings.default_timezone)
        states[name] = broadcast_state(campaign.send_at, campaign.list_name, zones, run,
                                       messages, now)  # fmt: skip
    return states
