"""Sending failed messages again once their cause is fixed (`mailer outbox retry`).

A failed row goes back to `queued` as if the engine had just queued it: a fresh count of
attempts and of the give-up age, and the next delivery claims it like any other row, so it
passes consent gate 2 again (a contact who withdrew or bounced meanwhile is skipped, not sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, literal, update

from mailer.config import Settings
from mailer.errors import MailerError
from mailer.store.tables import outbox


@dataclass(frozen=True)
class FailedMessages:
    """Which failed messages to send again; every field left out matches all."""

    campaign: str | None = None
    step: str | None = None
    since: datetime | None = None  # queued at or after this time
    reason: str | None = None  # a piece of the reason, in any case: "render", "5.7.1"


def check_names(settings: Settings, which: FailedMessages) -> None:
    """A campaign or step that settings do not have is a typo, not "0 messages"."""
    if which.campaign is None:
        if which.step is not None:
            raise MailerError("--step needs --campaign: step names are per campaign")
        return
    campaign = settings.campaigns.get(which.campaign)
    if campaign is None:
        known = ", ".join(sorted(settings.campaigns)) or "none"
        raise MailerError(f"no campaign '{which.campaign}' in settings (campaigns: {known})")
    if which.step is not None:
        campaign.step(which.step)  # SettingsError naming the steps there are


def requeue_failed(connection: Connection, which: FailedMessages, now: datetime) -> int:
    """Put the failed messages `which` names back in the queue, due `now`; return how many."""
    statement = (
        update(outbox)
        .where(outbox.c.status == "failed")
        .values(status="queued", queued_at=now, send_after=now, attempts=0, lease_owner=None,
                reply=None, relay=None,
                reason=literal("re-queued after: ") + func.coalesce(outbox.c.reason, ""))
    )  # fmt: skip
    if which.campaign is not None:
        statement = statement.where(outbox.c.campaign == which.campaign)
    if which.step is not None:
        statement = statement.where(outbox.c.step == which.step)
    if which.since is not None:
        statement = statement.where(outbox.c.queued_at >= which.since)
    if which.reason:
        statement = statement.where(
            func.lower(outbox.c.reason).contains(which.reason.lower(), autoescape=True)
        )
    return connection.execute(statement).rowcount or 0
