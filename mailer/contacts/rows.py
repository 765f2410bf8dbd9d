"""From a CSV header and row to a contact and its consent evidence: pure functions, no I/O.

Columns map to contact fields (`email`, `first_name`, `last_name`, `tags`, `timezone`, `locale`),
to consent evidence (`consent_at`, `consent_source`, `consent_ip`, `consent_user_agent`,
`consent_text`, `consent_text_version`, `consent_confirmed_at`), or else become attributes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.contacts.addresses import InvalidAddress, normalise_address
from mailer.contacts.csvfile import undecodable, unneutralise
from mailer.errors import InputFileError

CONTACT_FIELDS = ("email", "first_name", "last_name", "tags", "timezone", "locale")
EVIDENCE_FIELDS = (
    "consent_at", "consent_confirmed_at", "consent_source", "consent_ip",
    "consent_user_agent", "consent_text", "consent_text_version",
)  # fmt: skip
DROP = "-"
ALIASES = {
    "e_mail": "email", "email_address": "email", "e_mail_address": "email", "mail": "email",
    "firstname": "first_name", "first": "first_name", "given_name": "first_name",
    "forename": "first_name", "lastname": "last_name", "surname": "last_name",
    "family_name": "last_name", "last": "last_name", "tz": "timezone", "time_zone": "timezone",
    "language": "locale", "lang": "locale", "tag": "tags",
}  # fmt: skip
NAME_LIMIT = 200
_LOCALE = re.compile(r"^([a-zA-Z]{2,3})(?:[_-]([a-zA-Z]{2}|\d{3}))?$")
_TAG_SEPARATORS = re.compile(r"[,;|]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class RowError(ValueError):
    """This row cannot be imported; the message says why (the caller adds file and line)."""


def column_key(header: str) -> str:
    """`E-Mail Address ` -> `e_mail_address`: how headers are compared and attributes named."""
    return re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")


def map_columns(header: list[str], mapping: Mapping[str, str], where: str) -> list[str]:
    """The target of each column: a contact or evidence field, an attribute name, or "-" to drop.

    `mapping` (from settings or --map) names columns by their header text; other headers are
    recognised by name and common aliases, and the rest become attributes.
    """
    explicit = {column_key(source): target for source, target in mapping.items()}
    targets = []
    for position, name in enumerate(header, start=1):
        key = column_key(name)
        target = explicit.get(key) or ALIASES.get(key, key)
        if not target:
            raise InputFileError(f"{where}:1: column {position} has no name; name it or drop it")
        if target != DROP and target in targets:
            raise InputFileError(
                f"{where}:1: two columns map to '{target}'; drop one (map it to \"-\")"
            )
        targets.append(target)
    if "email" not in targets:
        raise InputFileError(
            f"{where}:1: no email column among {', '.join(header)}; name one 'email' or map it "
            'in settings ([lists.NAME.columns] "Your Header" = "email") or with --map'
        )
    return targets


@dataclass(slots=True)
class ContactRow:
    """One imported contact, normalised; empty cells are left out so they never erase data."""

    email: str
    first_name: str | None = None
    last_name: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    consent_at: datetime | None = None
    confirmed_at: datetime | None = None
    evidence: dict[str, str] = field(default_factory=dict)

    def merge(self, later: ContactRow) -> None:
        """Fold a later row for the same address into this one: later non-empty values win."""
        for name in ("first_name", "last_name", "timezone", "locale"):
            if getattr(later, name) is not None:
                setattr(self, name, getattr(later, name))
        self.attributes.update(later.attributes)
        self.tags |= later.tags
        if later.consent_at is not None:
            self.consent_at, self.confirmed_at = later.consent_at, later.confirmed_at
            self.evidence = later.evidence


def parse_row(
    fields: list[str],
    targets: list[str],
    attribute_types: Mapping[str, str],
    now: datetime,
) -> ContactRow:
    """Turn one CSV row into a ContactRow, or raise RowError saying what is wrong."""
    if undecodable(fields):
        raise RowError("undecodable bytes: the row is not valid text in the file's encoding")
    if len(fields) != len(targets):
        raise RowError(f"expected {len(targets)} columns, found {len(fields)}")
    if any("\x00" in value for value in fields):
        raise RowError("contains a NUL character, which no database column can hold")
    values = {
        target: unneutralise(value.strip())
        for target, value in zip(targets, fields, strict=True)
        if target != DROP and value.strip()
    }
    try:
        contact = ContactRow(email=normalise_address(values.pop("email", "")))
    except InvalidAddress as error:
        raise RowError(str(error)) from None
    for name in ("first_name", "last_name"):
        if name in values:
            setattr(contact, name, clean_name(values.pop(name), name) or None)
    if "timezone" in values:
        contact.timezone = check_timezone(values.pop("timezone"))
    if "locale" in values:
        contact.locale = normalise_locale(values.pop("locale"))
    if "tags" in values:
        contact.tags = parse_tags(values.pop("tags"))
    evidence = {name: values.pop(name) for name in EVIDENCE_FIELDS if name in values}
    _attach_consent(contact, evidence, now)
    for name, value in values.items():
        contact.attributes[name] = coerce(value, attribute_types.get(name, "string"), name)
    return contact


def _attach_consent(contact: ContactRow, evidence: dict[str, str], now: datetime) -> None:
    if not evidence:
        return
    if "consent_at" not in evidence:
        raise RowError(
            f"{', '.join(evidence)} given without consent_at: add when consent was given, "
            "or leave the evidence out (an import never invents consent)"
        )
    contact.consent_at = parse_moment(evidence.pop("consent_at"), "consent_at")
    if "consent_confirmed_at" in evidence:
        contact.confirmed_at = parse_moment(
            evidence.pop("consent_confirmed_at"), "consent_confirmed_at"
        )
        if contact.confirmed_at < contact.consent_at:
            raise RowError("consent_confirmed_at is before consent_at")
    if max(contact.consent_at, contact.confirmed_at or contact.consent_at) > now:
        raise RowError("consent_at is in the future")
    contact.evidence = {name.removeprefix("consent_"): value for name, value in evidence.items()}


def clean_name(value: str, name: str) -> str:
    """One line of printable text: CR, LF, tabs and control characters never reach a header."""
    cleaned = _CONTROL.sub("", " ".join(value.split())).strip()
    if len(cleaned) > NAME_LIMIT:
        raise RowError(f"{name} is longer than {NAME_LIMIT} characters")
    return cleaned


def parse_tags(value: str) -> set[str]:
    return {clean_name(tag, "tag")[:100] for tag in _TAG_SEPARATORS.split(value) if tag.strip()}


@lru_cache(maxsize=1024)
def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise RowError(
            f"timezone '{value}' is not an IANA time zone (e.g. Europe/Rome, America/New_York)"
        ) from None
    return value


def normalise_locale(value: str) -> str:
    """`it`, `it-IT`, `it_it` -> `it`, `it_IT`, `it_IT`."""
    match = _LOCALE.match(value)
    if match is None:
        raise RowError(f"locale '{value}' is not a locale (e.g. en, it, pt_BR)")
    language, region = match.groups()
    return language.lower() + (f"_{region.upper()}" if region else "")


def parse_moment(value: str, name: str) -> datetime:
    """An ISO 8601 date or time; without an offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RowError(
            f"{name} '{value}' is not an ISO 8601 time (write 2024-03-12 or 2024-03-12T09:30:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_BOOLEANS = {"true": True, "yes": True, "y": True, "1": True,
             "false": False, "no": False, "n": False, "0": False}  # fmt: skip


def coerce(value: str, kind: str, name: str) -> Any:
    """An attribute cell as the type settings declare for it ([attributes]); JSON-ready."""
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value.replace(",", ".")) if value.count(",") == 1 else float(value)
        if kind == "boolean":
            return _BOOLEANS[value.lower()]
        if kind == "date":
            return date.fromisoformat(value).isoformat()
        if kind == "datetime":
            return parse_moment(value, name).isoformat()
    except (ValueError, KeyError):
        raise RowError(f"{name} '{value}' is not {_ARTICLE[kind]}") from None
    return value


_ARTICLE = {kind: f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}" for kind in
            ("integer", "number", "boolean", "date", "datetime")}  # fmt: skip
