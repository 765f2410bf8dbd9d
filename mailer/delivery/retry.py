"""Sending failed messages again once their cause is fixed (`mailer outbox retry`).

A failed row goes back to `queued` as if the engine had just queued it: a fresh count of
attempts and of the give-up age, and the next delivery claims it like any other row, so it
passes consent gate 2 again (a contact who withdrew or bounced meanwhile is skipped, not sent).
A failed step whose sequence has gone on (a later step of the same run queued or sent since)
stays failed: sent now, it would arrive after the step that follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, exists, func, literal, select, update

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
    """Put the failed messages `which` names back in the queue, due `now`, except those their
    sequence has gone on from (passed_by); return how many."""
    statement = (
        update(outbox)
        .where(outbox.c.status == "failed", ~_gone_on())
        .values(status="queued", queued_at=now, send_after=now, attempts=0, lease_owner=None,
                reply=None, relay=None,
                reason=literal("re-queued after: ") + func.coalesce(outbox.c.reason, ""))
    )  # fmt: skip
    return connection.execute(statement.where(*_named(which))).rowcount or 0


def passed_by(connection: Connection, which: FailedMessages) -> int:
    """How many of the failed messages `which` names stay failed: their sequence went on."""
    query = select(func.count()).where(outbox.c.status == "failed", _gone_on(), *_named(which))
    return int(connection.scalar(query) or 0)


def _gone_on() -> ColumnElement[bool]:
    """A later message of the same run (contact, campaign, cycle) was queued or sent after this
    one; found through the contact's index, a handful of rows."""
    later = outbox.alias("later")
    return exists().where(
        later.c.contact_id == outbox.c.contact_id, later.c.campaign == outbox.c.campaign,
        later.c.cycle == outbox.c.cycle, later.c.id > outbox.c.id,
        later.c.status.in_(("queued", "sending", "deferred", "sent")),
    )  # fmt: skip


def _named(which: FailedMessages) -> list[ColumnElement[bool]]:
    found = []
    if which.campaign is not None:
        found.append(outbox.c.campaign == which.campaign)
    if which.step is not None:
        found.append(outbox.c.step == which.step)
    if which.since is not None:
        found.append(outbox.c.queued_at >= which.since)
    if which.reason:
        found.append(func.lower(outbox.c.reason).contains(which.reason.lower(), autoescape=True))
    return found
