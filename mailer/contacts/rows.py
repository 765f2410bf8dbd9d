"""From a CSV header and row to a contact and its consent evidence: pure functions, no I/O.

Columns map to contact fields (`email`, `first_name`, `last_name`, `tags`, `timezone`, `locale`),
to consent evidence (`consent_at`, `consent_source`, `consent_ip`, `consent_user_agent`,
`consent_text`, `consent_text_version`, `consent_confirmed_at`), or else become attributes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.contacts.addresses import InvalidAddress, normalise_address
from mailer.contacts.cells import printable, shown
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
NAME_LIMIT = 200  # characters the database keeps of a first or last name
INTEGER_RANGE = range(-(2**63), 2**63)  # what both databases hold and compare as integers
NO_YEAR = 1604  # the year of a date given without one: a leap year, as Apple Contacts writes it
_LOCALE = re.compile(r"^([a-zA-Z]{2,3})(?:[_-]([a-zA-Z]{2}|\d{3}))?$")
_TAG_SEPARATORS = re.compile(r"[,;|]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MONTH_DAY = re.compile(r"(\d{1,2})/(\d{1,2})|--(\d{2})-?(\d{2})")  # 03/17, --03-17, --0317


class RowError(ValueError):
    """This row cannot be imported; the message says why (the caller adds file and line)."""


class CellError(ValueError):
    """This cell cannot be kept as its column says; the contact imports without it."""


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
        columns = printable(", ".join(header))
        raise InputFileError(
            f"{where}:1: no email column among {columns}; name one 'email' or map it "
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
    # (column, what was done); a tuple, not a list: no container to allocate for every row
    warnings: tuple[tuple[str, str], ...] = ()

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
    """Turn one CSV row into a ContactRow, or raise RowError saying what is wrong.

    Only a row without a usable address, a broken row or undecodable bytes is rejected; a cell
    that does not fit its column is left out of the contact, with a warning in `warnings`."""
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
            setattr(contact, name, _limited(contact, name, clean_name(values.pop(name))) or None)
    # Each cell in its own try: a cell that does not fit is left out, the rest is kept.
    if "timezone" in values:
        try:
            contact.timezone = check_timezone(values.pop("timezone"))
        except CellError as error:
            _left_out(contact, "timezone", error)
    if "locale" in values:
        try:
            contact.locale = normalise_locale(values.pop("locale"))
        except CellError as error:
            _left_out(contact, "locale", error)
    if "tags" in values:
        contact.tags = parse_tags(values.pop("tags"))
    evidence = {name: values.pop(name) for name in EVIDENCE_FIELDS if name in values}
    _attach_consent(contact, evidence, now)
    attributes = contact.attributes
    for name, value in values.items():
        kind = attribute_types.get(name, "string")
        try:
            attributes[name] = value if kind == "string" else coerce(value, kind)
        except CellError as error:
            _left_out(contact, name, error)
    return contact


def _left_out(contact: ContactRow, column: str, error: CellError) -> None:
    contact.warnings += ((column, f"{error}; left out, the contact imports without it"),)


def _limited(contact: ContactRow, column: str, name: str) -> str:
    if len(name) <= NAME_LIMIT:
        return name
    contact.warnings += ((column, f"{len(name)} characters; kept the first {NAME_LIMIT}"),)
    return name[:NAME_LIMIT]


def _attach_consent(contact: ContactRow, evidence: dict[str, str], now: datetime) -> None:
    """Consent evidence that cannot be read rejects the row: importing the contact without it
    would lose the proof of consent, and with it would invent one."""
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


def clean_name(value: str) -> str:
    """One line of printable text: CR, LF, tabs and control characters never reach a header."""
    return _CONTROL.sub("", " ".join(value.split())).strip()


def parse_tags(value: str) -> set[str]:
    return {clean_name(tag)[:100] for tag in _TAG_SEPARATORS.split(value) if tag.strip()}


@lru_cache(maxsize=1024)
def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CellError(
            f"{shown(value)} is not an IANA time zone (e.g. Europe/Rome, America/New_York)"
        ) from None
    return value


def normalise_locale(value: str) -> str:
    """`it`, `it-IT`, `it_it` -> `it`, `it_IT`, `it_IT`."""
    match = _LOCALE.match(value)
    if match is None:
        raise CellError(f"{shown(value)} is not a locale (e.g. en, it, pt_BR)")
    language, region = match.groups()
    return language.lower() + (f"_{region.upper()}" if region else "")


def parse_moment(value: str, name: str) -> datetime:
    """An ISO 8601 date or time; without an offset it is taken as UTC."""
    try:
        return _moment(value)
    except CellError as error:
        raise RowError(f"{name} {error}") from None


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+01:00 is before year 1
        raise CellError(
            f"{shown(value)} is not an ISO 8601 time (write 2024-03-12 or 2024-03-12T09:30:00Z)"
        ) from None


def parse_date(value: str) -> str:
    """An ISO 8601 date; a day without a year (`03/17` as Mailchimp exports a birthday, or ISO's
    `--03-17`) gets the year NO_YEAR, so yearly triggers, which read month and day, fire on it."""
    found = _MONTH_DAY.fullmatch(value)
    try:
        if found is not None:
            month, day = (int(part) for part in found.groups() if part is not None)
            return date(NO_YEAR, month, day).isoformat()
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise CellError(
            f"{shown(value)} is not a date (write 2024-03-17, or 03/17 for a day without a year)"
        ) from None


_BOOLEANS = {"true": True, "yes": True, "y": True, "1": True,
             "false": False, "no": False, "n": False, "0": False}  # fmt: skip


def coerce(value: str, kind: str) -> Any:
    """An attribute cell as the type settings declare for it ([attributes]): a value both
    databases can store in JSON and compare, or CellError."""
    if kind == "integer":
        try:
            number = int(value)
        except ValueError:  # also a number of more than 4,300 digits
            raise CellError(f"{shown(value)} is not an integer") from None
        if number not in INTEGER_RANGE:
            raise CellError(f"{shown(value)} is out of range for an integer (at most 19 digits)")
        return number
    if kind == "number":
        try:
            real = float(value.replace(",", ".")) if value.count(",") == 1 else float(value)
        except ValueError:
            raise CellError(f"{shown(value)} is not a number") from None
        if not math.isfinite(real):  # nan, inf, 1e999: not JSON, and no database compares them
            raise CellError(f"{shown(value)} is not a finite number")
        return real
    if kind == "boolean":
        if value.lower() not in _BOOLEANS:
            raise CellError(f"{shown(value)} is not true or false (nor yes/no, 1/0)")
        return _BOOLEANS[value.lower()]
    if kind == "date":
        return parse_date(value)
    if kind == "datetime":
        return _moment(value).isoformat()
    return value
