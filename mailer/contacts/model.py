"""A contact as the rest of mailer reads it: plain data, no database attached."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

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
    row = connection.execute(select(contacts).where(contacts.c.email == email)).first()
    if row is None:
        return None
    tags = connection.scalars(
        select(contact_tags.c.tag).where(contact_tags.c.contact_id == row.id)
    ).all()
    return Contact(
        email=row.email, first_name=row.first_name, last_name=row.last_name,
        timezone=row.timezone, locale=row.locale, attributes=dict(row.attributes or {}),
        tags=tuple(sorted(tags)), id=row.id,
    )  # fmt: skip
