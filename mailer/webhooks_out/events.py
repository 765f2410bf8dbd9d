"""Queueing an event for the subscriptions that want it, in the caller's transaction: the
event is queued if and only if the change it reports is committed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from mailer.config import Settings, WebhookEventType
from mailer.store.bulk import one_of
from mailer.store.tables import contacts, enrollments, outbox, webhook_outbox


@dataclass(frozen=True)
class WebhookEvent:
    """What happened, as the site knows it: the message (outbox_id), the contact or the
    sequence run (enrollment_id) fill in what is not given (email, campaign, step, ...)."""

    occurred_at: datetime
    contact_id: int | None = None
    outbox_id: int | None = None
    enrollment_id: int | None = None
    email: str | None = None
    campaign: str | None = None
    step: str | None = None
    variant: str | None = None
    message_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def subscribers(settings: Settings, event_type: WebhookEventType) -> list[str]:
    return [name for name, hook in settings.webhooks.outgoing.items() if hook.wants(event_type)]


def enqueue(connection: Connection, settings: Settings, event_type: WebhookEventType,
            events: Iterable[WebhookEvent]) -> int:  # fmt: skip
    """Queue `events` for every subscription that wants `event_type`, in one statement; return
    the rows written. Nothing is read or written (`events` is not even iterated) when no
    subscription wants the type."""
    names = subscribers(settings, event_type)
    if not names:
        return 0
    happened = [_filled(event, known) for event, known in _known(connection, list(events))]
    rows = [
        {"subscription": name, "event_type": event_type,
         "payload": payload(event_type, event), "created_at": event.occurred_at,
         "attempts": 0, "next_attempt_at": event.occurred_at, "status": "pending"}
        for event in happened for name in names
    ]  # fmt: skip
    if rows:
        connection.execute(insert(webhook_outbox), rows)
    return len(rows)


def payload(event_type: str, event: WebhookEvent) -> dict[str, Any]:
    """The JSON body: one id per event (the same for every subscription: a receiver that
    sees it twice has seen a retry)."""
    return {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
        "contact": {"email": event.email, "id": event.contact_id},
        "campaign": event.campaign,
        "step": event.step,
        "variant": event.variant,
        "message_id": event.message_id,
        "data": dict(event.data),
    }


def _known(connection: Connection,
           events: list[WebhookEvent]) -> list[tuple[WebhookEvent, dict[str, Any]]]:  # fmt: skip
    """Each event with what its message, run and contact say (three queries at most)."""
    messages: dict[int, Any] = {}
    if ids := {event.outbox_id for event in events if event.outbox_id is not None}:
        messages = {row.id: row for row in connection.execute(
            select(outbox.c.id, outbox.c.contact_id, outbox.c.campaign, outbox.c.step,
                   outbox.c.variant, outbox.c.message_id)
            .where(one_of(connection, outbox.c.id, ids))
        )}  # fmt: skip
    runs: dict[int, Any] = {}
    if ids := {event.enrollment_id for event in events if event.enrollment_id is not None}:
        runs = {row.id: row for row in connection.execute(
            select(enrollments.c.id, enrollments.c.contact_id, enrollments.c.campaign)
            .where(one_of(connection, enrollments.c.id, ids))
        )}  # fmt: skip
    known: list[tuple[WebhookEvent, dict[str, Any]]] = []
    for event in events:
        found: dict[str, Any] = {}
        for row in (messages.get(event.outbox_id or -1), runs.get(event.enrollment_id or -1)):
            if row is not None:
                found = dict(row._mapping) | found
        found.pop("id", None)
        known.append((event, found))
    people = {event.contact_id or found.get("contact_id") for event, found in known} - {None}
    emails: dict[int, str] = {}
    if people:
        emails = dict(connection.execute(
            select(contacts.c.id, contacts.c.email).where(one_of(connection, contacts.c.id, people))
        ).all())  # fmt: skip
    for event, found in known:
        contact_id = event.contact_id or found.get("contact_id")
        if contact_id is not None and contact_id in emails:
            found["email"] = emails[contact_id]
    return known


def _filled(event: WebhookEvent, known: dict[str, Any]) -> WebhookEvent:
    """`event` with what it left None taken from `known`."""
    given = {name: value for name, value in vars(event).items() if value is not None}
    return WebhookEvent(**({key: value for key, value in known.items()
                            if key in WebhookEvent.__dataclass_fields__} | given))  # fmt: skip


HIT_TYPES: tuple[tuple[str, WebhookEventType], ...] = (("open", "opened"), ("click", "clicked"))


def enqueue_hits(connection: Connection, settings: Settings,
                 rows: Sequence[Mapping[str, Any]]) -> None:  # fmt: skip
    """A person's opens and clicks as tracking/recording.py writes them (its event rows), one
    statement per type. A machine's are not sent: a receiver would count them as people."""
    for kind, event_type in HIT_TYPES:
        enqueue(connection, settings, event_type, (
            WebhookEvent(row["occurred_at"], contact_id=row["contact_id"],
                         outbox_id=row["outbox_id"], campaign=row["name"], step=row["step"],
                         data={key: row["properties"][key] for key in ("link", "url")
                               if key in row["properties"]})
            for row in rows if row["kind"] == kind
        ))  # fmt: skip
