"""Pausing a campaign's delivery: its messages stay in the outbox (the engine keeps queueing
them on time) and go out when it is resumed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete

from mailer.config import Settings
from mailer.errors import SettingsError
from mailer.store.tables import campaign_pauses
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
