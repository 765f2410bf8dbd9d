"""Website events (signed up, viewed a product, abandoned a cart, purchased, ...) recorded
against contacts, for segments, triggers, goals and conditions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from mailer.contacts.addresses import InvalidAddress, normalise_address
from mailer.errors import MailerError, UnknownContactError
from mailer.store.tables import contacts, events

# What an event may be called (match it whole: `fullmatch`).
EVENT_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,99}")


def record_event(connection: Connection, email: str, name: str, occurred_at: datetime,
                 properties: Mapping[str, Any] | None = None) -> tuple[int, int]:  # fmt: skip
    """Record that the contact did `name`; return the event's id and the contact's."""
    if not EVENT_NAME.fullmatch(name):
        raise MailerError(f"event name '{name}': lowercase letters, digits, '_', '.' or '-'")
    try:
        address = normalise_address(email)
    except InvalidAddress as error:
        raise MailerError(str(error)) from None
    contact_id = connection.scalar(select(contacts.c.id).where(contacts.c.email == address))
    if contact_id is None:
        raise UnknownContactError(f"{address}: no such contact; import it first")
    event_id = connection.execute(
        insert(events).values(contact_id=contact_id, kind="website", name=name, step=None,
                              properties=dict(properties or {}), occurred_at=occurred_at)
        .returning(events.c.id)
    ).scalar_one()  # fmt: skip
    return int(event_id), int(contact_id)
