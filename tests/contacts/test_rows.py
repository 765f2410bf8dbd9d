from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailer.contacts.rows import RowError, column_key, map_columns, parse_row
from mailer.errors import InputFileError

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def parse(header: list[str], fields: list[str], types: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return parse_row(fields, map_columns(header, {}, "f.csv"), types or {}, NOW)


def test_headers_are_recognised_by_name_and_alias() -> None:
    assert map_columns(["E-Mail", "First Name", "Surname", "Lang", "Shoe Size"], {}, "f") == [
        "email", "first_name", "last_name", "locale", "shoe_size",
    ]  # fmt: skip
    assert column_key("  Opt-in Time ") == "opt_in_time"


def test_explicit_mapping_wins_and_dash_drops() -> None:
    targets = map_columns(["Contact", "Notes"], {"Contact": "email", "Notes": "-"}, "f")
    assert targets == ["email", "-"]


def test_two_email_columns_or_none_is_a_file_error() -> None:
    with pytest.raises(InputFileError, match=r"f\.csv:1: two columns map to 'email'"):
        map_columns(["email", "E-mail"], {}, "f.csv")
    with pytest.raises(InputFileError, match="no email column"):
        map_columns(["name"], {}, "f.csv")


def test_hostile_names_become_one_printable_line() -> None:
    row = parse(["email", "first_name"], ["a@example.com", "Eve\r\nBcc: x@evil.example\x07"])
    assert row.first_name == "Eve Bcc: x@evil.example"


@pytest.mark.parametrize(("fields", "message"), [
    (["a@example.com", "Mars/Olympus", ""], "not an IANA time zone"),
    (["a@example.com", "", "klingon-language"], "is not a locale"),
])  # fmt: skip
def test_bad_timezone_or_locale_is_rejected(fields: list[str], message: str) -> None:
    with pytest.raises(RowError, match=message):
        parse(["email", "timezone", "locale"], fields)


def test_typed_attributes_are_coerced() -> None:
    row = parse(["email", "orders", "vip", "ltv", "since"], ["a@example.com", "3", "yes", "9,5",
                "2024-02-29"], {"orders": "integer", "vip": "boolean", "ltv": "number",
                                "since": "date"})  # fmt: skip
    assert row.attributes == {"orders": 3, "vip": True, "ltv": 9.5, "since": "2024-02-29"}


def test_exported_formula_guard_is_removed_on_import() -> None:
    row = parse(["email", "note"], ["a@example.com", "'=1+1"])
    assert row.attributes == {"note": "=1+1"}


def test_a_nul_character_rejects_the_row() -> None:
    with pytest.raises(RowError, match="NUL"):
        parse(["email", "note"], ["a@example.com", "a\x00b"])
