"""A contact as the rest of mailer reads it: plain data, no database attached."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from mailer.store.bulk import one_of
from mailer.store.tables import contact_tags, contacts


@dataclass(frozen=True)
class Contact:
    email: str
    first_name: str | None = None
    last_name: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    id: int | None = None

    @property
    def name(self) -> str | None:
        joined = " ".join(part for part in (self.first_name, self.last_name) if part)
        return joined or None


def load_contact(connection: Connection, email: str) -> Contact | None:
    """The contact with this (normalised) address, or None."""
    contact_id = connection.scalar(select(contacts.c.id).where(contacts.c.email == email))
    return None if contact_id is None else load_contacts(connection, [contact_id])[contact_id]


def load_contacts(connection: Connection, ids: Iterable[int]) -> dict[int, Contact]:
    """The contacts with these ids, read in two queries (a batch of messages needs them all)."""
    wanted = list(ids)
    tags: dict[int, list[str]] = {}
    for contact_id, tag in connection.execute(
        select(contact_tags.c.contact_id, contact_tags.c.tag)
        .where(one_of(connection, contact_tags.c.contact_id, wanted))
        .order_by(contact_tags.c.tag)
    ):
        tags.setdefault(contact_id, []).append(tag)
    rows = connection.execute(select(contacts).where(one_of(connection, contacts.c.id, wanted)))
    return {
        row.id: Contact(
            email=row.email, first_name=row.first_name, last_name=row.last_name,
            timezone=row.timezone, locale=row.locale, attributes=dict(row.attributes or {}),
            tags=tuple(tags.get(row.id, ())), id=row.id,
        )
        for row in rows
    }
