"""The queue of outgoing webhook deliveries: claiming due rows, writing what an attempt
came to (delivered, a retry after backoff, or dead), counts per subscription, re-queueing.

A claimed row's next_attempt_at moves past the attempt's timeout: that is its lease. A daemon
that dies mid-POST leaves it to be tried again (at least once: receivers dedupe on the id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from mailer.config import Settings
from mailer.store.bulk import one_of
from mailer.store.tables import webhook_outbox

# After the 1st, 2nd, ... failed attempt; then every EVERY, until MAX_ATTEMPTS have failed.
BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30),
           timedelta(hours=2), timedelta(hours=6))  # fmt: skip
EVERY = timedelta(hours=12)
MAX_ATTEMPTS = 11  # the last about 2 days 21 hours after the first
LEASE_BEYOND_TIMEOUT = timedelta(minutes=1)


def retry_delay(failed_attempts: int) -> timedelta:
    """How long after its `failed_attempts`-th failure a row is tried again."""
    return BACKOFF[failed_attempts - 1] if failed_attempts <= len(BACKOFF) else EVERY


@dataclass(frozen=True)
class Due:
    """A claimed row: POST `payload` to `subscription`'s URL (attempt number `attempts`)."""

    id: int
    subscription: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: `error` None when the endpoint answered 2xx."""

    id: int
    attempts: int
    error: str | None


def claim(connection: Connection, settings: Settings, now: datetime, limit: int) -> list[Due]:
    """Up to `limit` due rows of the subscriptions in settings, leased to the caller (on
    PostgreSQL rows another daemon holds are skipped, never delivered twice)."""
    hooks = settings.webhooks.outgoing
    if not hooks:
        return []
    query = (
        select(webhook_outbox.c.id, webhook_outbox.c.subscription, webhook_outbox.c.payload,
               webhook_outbox.c.attempts)
        .where(webhook_outbox.c.status == "pending", webhook_outbox.c.next_attempt_at <= now,
               webhook_outbox.c.subscription.in_(list(hooks)))
        .order_by(webhook_outbox.c.next_attempt_at, webhook_outbox.c.id)
        .limit(limit)
    )  # fmt: skip
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = connection.execute(query).all()
    if not rows:
        return []
    lease = max(hook.timeout for hook in hooks.values()) + LEASE_BEYOND_TIMEOUT
    connection.execute(
        update(webhook_outbox)
        .where(one_of(connection, webhook_outbox.c.id, [row.id for row in rows]))
        .values(attempts=webhook_outbox.c.attempts + 1, next_attempt_at=now + lease)
    )  # fmt: skip
    return [Due(row.id, row.subscription, row.payload, row.attempts + 1) for row in rows]


def record(connection: Connection, attempts: list[Attempt], now: datetime) -> None:
    """Write what the attempts came to: delivered, pending again after backoff, or dead."""
    values = []
    for attempt in attempts:
        if attempt.error is None:
            values.append({"row_id": attempt.id, "status": "delivered", "delivered_at": now,
                           "next_attempt_at": None, "last_error": None})  # fmt: skip
            continue
        dead = attempt.attempts >= MAX_ATTEMPTS
        values.append({"row_id": attempt.id, "status": "dead" if dead else "pending",
                       "delivered_at": None, "last_error": attempt.error[:500],
                       "next_attempt_at": None if dead
                       else now + retry_delay(attempt.attempts)})  # fmt: skip
    if values:
        statement = (
            update(webhook_outbox)
            .where(webhook_outbox.c.id == bindparam("row_id"))
            .values({key: bindparam(key) for key in values[0] if key != "row_id"})
        )
        connection.execute(statement, values)


def forget_delivered(connection: Connection, settings: Settings, now: datetime) -> int:
    """Delete rows delivered longer ago than [webhooks] outgoing_retention."""
    cutoff = now - settings.webhooks.outgoing_retention
    done = connection.execute(
        delete(webhook_outbox).where(webhook_outbox.c.status == "delivered",
                                     webhook_outbox.c.delivered_at < cutoff)
    )  # fmt: skip
    return done.rowcount or 0


def requeue_dead(connection: Connection, subscription: str, now: datetime) -> int:
    """The dead rows of `subscription` pending again, due now, with a fresh set of attempts."""
    done = connection.execute(
        update(webhook_outbox)
        .where(webhook_outbox.c.subscription == subscription, webhook_outbox.c.status == "dead")
        .values(status="pending", attempts=0, next_attempt_at=now)
    )  # fmt: skip
    return done.rowcount or 0


@dataclass(frozen=True)
class SubscriptionStatus:
    name: str
    url: str | None  # None: rows of a subscription no longer in settings (not delivered)
    pending: int
    delivered_24h: int
    dead: int
    oldest_pending: datetime | None
    last_error: str | None

    def as_dict(self, now: datetime) -> dict[str, Any]:
        age = None if self.oldest_pending is None else (now - self.oldest_pending)
        return {"name": self.name, "url": self.url, "pending": self.pending,
                "delivered_24h": self.delivered_24h, "dead": self.dead,
                "oldest_pending_seconds": None if age is None else int(age.total_seconds()),
                "last_error": self.last_error}  # fmt: skip


def status(connection: Connection, settings: Settings, now: datetime) -> list[SubscriptionStatus]:
    """Per subscription (those in settings, and any other the queue still holds rows of)."""
    table = webhook_outbox.c
    counts: dict[str, dict[str, Any]] = {}
    grouped = connection.execute(
        select(table.subscription, table.status, func.count(), func.min(table.created_at))
        .group_by(table.subscription, table.status)
    )  # fmt: skip
    for name, state, count, oldest in grouped:
        counts.setdefault(name, {})[state] = (count, oldest)
    recent: dict[str, int] = dict(connection.execute(
        select(table.subscription, func.count())
        .where(table.status == "delivered", table.delivered_at >= now - timedelta(hours=24))
        .group_by(table.subscription)
    ).all())  # fmt: skip
    found = []
    gone = sorted(set(counts) - set(settings.webhooks.outgoing))  # rows of a removed one
    for name in [*settings.webhooks.outgoing, *gone]:
        hook = settings.webhooks.outgoing.get(name)
        held = counts.get(name, {})
        last_error = connection.scalar(
            select(table.last_error)
            .where(table.subscription == name, table.last_error.is_not(None),
                   table.status != "delivered")
            .order_by(table.id.desc()).limit(1)
        )  # fmt: skip
        found.append(SubscriptionStatus(
            name, hook.url if hook else None, held.get("pending", (0, None))[0],
            int(recent.get(name, 0)), held.get("dead", (0, None))[0],
            held.get("pending", (0, None))[1], last_error,
        ))  # fmt: skip
    return found
