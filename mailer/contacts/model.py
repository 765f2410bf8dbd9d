"""A contact as the rest of mailer reads it: plain data, no database attached."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import Connection, Select, select

from mailer.store.bulk import listed, one_of_given
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
    dialect = connection.dialect.name
    wanted = {"ids": listed(dialect, ids)}
    tagged, described = _queries(dialect)
    tags: dict[int, list[str]] = {}
    for contact_id, tag in connection.execute(tagged, wanted):
        tags.setdefault(contact_id, []).append(tag)
    return {
        contact_id: Contact(email=email, first_name=first, last_name=last, timezone=zone,
                            locale=locale, attributes=dict(attributes or {}),
                            tags=tuple(tags.get(contact_id, ())), id=contact_id)
        for contact_id, email, first, last, zone, locale, attributes
        in connection.execute(described, wanted)
    }  # fmt: skip


@cache
def _queries(dialect: str) -> tuple[Select[Any], Select[Any]]:
    """The tags and the contacts of `load_contacts`, built once: delivery reads them for every
    batch."""
    tagged = (select(contact_tags.c.contact_id, contact_tags.c.tag)
              .where(one_of_given(dialect, contact_tags.c.contact_id, "ids"))
              .order_by(contact_tags.c.tag))  # fmt: skip
    described = (select(contacts.c.id, contacts.c.email, contacts.c.first_name,
                        contacts.c.last_name, contacts.c.timezone, contacts.c.locale,
                        contacts.c.attributes)
                 .where(one_of_given(dialect, contacts.c.id, "ids")))  # fmt: skip
    return tagged, described
