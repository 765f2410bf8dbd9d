"""Pausing a campaign's delivery: its messages stay in the outbox (the engine keeps queueing
them on time) and go out when it is resumed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from mailer.config import Settings
from mailer.errors import SettingsError
from mailer.store.tables import campaign_pauses, outbox
from mailer.store.upsert import upsert


def _known(settings: Settings, campaign: str) -> None:
    if campaign not in settings.campaigns:
        known = ", ".join(sorted(settings.campaigns)) or "none"
        raise SettingsError(f"no campaign '{campaign}' in {settings.source} (campaigns: {known})")


def pause(connection: Connection, settings: Settings, campaign: str, reason: str,
          now: datetime) -> None:  # fmt: skip
    """Hold the campaign's delivery; pausing a paused campaign keeps the first reason."""
    _known(settings, campaign)
    row = {"campaign": campaign, "reason": reason, "paused_at": now}
    upsert(connection, campaign_pauses, [row], keys=("campaign",))


def resume(connection: Connection, settings: Settings, campaign: str) -> bool:
    """Deliver the campaign again; False when it was not paused."""
    _known(settings, campaign)
    deleted = connection.execute(
        delete(campaign_pauses).where(campaign_pauses.c.campaign == campaign)
    )
    return bool(deleted.rowcount)


def resume_sending(connection: Connection, settings: Settings, campaign: str,
                   now: datetime) -> tuple[bool, int]:  # fmt: skip
    """Resume the campaign (`mailer campaign resume`), its deferred messages due `now`:
    whether it was paused, and how many messages were deferred."""
    return resume(connection, settings, campaign), send_deferred_now(connection, campaign, now)


def send_deferred_now(connection: Connection, campaign: str, now: datetime) -> int:
    """Make the campaign's deferred messages due `now` (their cause, a relay or a pause, may
    be fixed: no reason to wait out the backoff); how many."""
    due = (
        update(outbox)
        .where(outbox.c.campaign == campaign, outbox.c.status == "deferred",
               outbox.c.send_after > now)
        .values(send_after=now)
    )  # fmt: skip
    return connection.execute(due).rowcount or 0


def paused_campaigns(connection: Connection) -> dict[str, str]:
    """Paused campaigns and why."""
    return {row.campaign: row.reason for row in connection.execute(select(campaign_pauses))}


def campaign_states(connection: Connection, settings: Settings) -> list[dict[str, Any]]:
    """Each campaign of settings: its kind, why it is paused (or None), and its outbox rows
    by status (a message being sent right now counts as queued)."""
    paused = paused_campaigns(connection)
    counts: dict[str, dict[str, int]] = {}
    for row in connection.execute(
        select(outbox.c.campaign, outbox.c.status, func.count().label("messages")).group_by(
            outbox.c.campaign, outbox.c.status
        )
    ):
        status = "queued" if row.status == "sending" else row.status
        by_status = counts.setdefault(row.campaign, {})
        by_status[status] = by_status.get(status, 0) + row.messages
    return [{"campaign": name, "kind": campaign.kind, "paused": paused.get(name),
             "messages": counts.get(name, {})}
            for name, campaign in settings.campaigns.items()]  # fmt: skip
