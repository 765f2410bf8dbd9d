from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.contacts.csvfile import unneutralise
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
    with pytest.raises(InputFileError, match=r"among name\\r\\nf\.csv:9: x\\x1b\[2J;"):
        map_columns(["name\r\nf.csv:9: x\x1b[2J"], {}, "f.csv")


def test_hostile_names_become_one_printable_line() -> None:
    row = parse(["email", "first_name"], ["a@example.com", "Eve\r\nBcc: x@evil.example\x07"])
    assert row.first_name == "Eve Bcc: x@evil.example"


@pytest.mark.parametrize(("fields", "column", "message"), [
    (["a@example.com", "Mars/Olympus", ""], "timezone", "not an IANA time zone"),
    (["a@example.com", "", "klingon-language"], "locale", "is not a locale"),
])  # fmt: skip
def test_a_bad_timezone_or_locale_is_left_out_with_a_warning_and_the_contact_imports(
    fields: list[str], column: str, message: str
) -> None:
    row = parse(["email", "timezone", "locale"], fields)
    assert (row.email, row.timezone, row.locale) == ("a@example.com", None, None)
    assert [name for name, _ in row.warnings] == [column]
    assert message in row.warnings[0][1]
    assert row.warnings[0][1].endswith("left out, the contact imports without it")


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-Infinity", "1e999", "-1e400"])
def test_a_non_finite_number_is_left_out_and_the_contact_imports(cell: str) -> None:
    row = parse(["email", "ltv", "city"], ["a@example.com", cell, "Rome"], {"ltv": "number"})
    assert row.attributes == {"city": "Rome"}
    assert list(row.warnings) == [("ltv", f"'{cell}' is not a finite number; left out, the contact "
                                    "imports without it")]  # fmt: skip


def test_an_integer_too_big_for_the_databases_is_left_out() -> None:
    huge = "9" * 400
    row = parse(["email", "orders"], ["a@example.com", huge], {"orders": "integer"})
    assert row.attributes == {}
    assert "out of range for an integer" in row.warnings[0][1]
    largest = str(2**63 - 1)
    row = parse(["email", "orders"], ["a@example.com", largest], {"orders": "integer"})
    assert row.attributes == {"orders": 2**63 - 1} and list(row.warnings) == []


@pytest.mark.parametrize(("cell", "stored"), [
    ("03/17", "1604-03-17"), ("3/7", "1604-03-07"), ("02/29", "1604-02-29"),
    ("--03-17", "1604-03-17"), ("--0317", "1604-03-17"), ("1988-03-17", "1988-03-17"),
])  # fmt: skip
def test_a_birthday_without_a_year_is_a_date_with_the_placeholder_year(
    cell: str, stored: str
) -> None:
    row = parse(["email", "birthday"], ["a@example.com", cell], {"birthday": "date"})
    assert row.attributes == {"birthday": stored} and list(row.warnings) == []


@pytest.mark.parametrize("cell", ["17/03", "02/30", "March 17", "2024-13-01"])
def test_a_date_that_cannot_be_read_is_left_out_with_a_warning(cell: str) -> None:
    row = parse(["email", "birthday"], ["a@example.com", cell], {"birthday": "date"})
    assert row.attributes == {}
    why = "is not a date (write 2024-03-17, or 03/17 for a day without a year)"
    assert list(row.warnings) == [
        ("birthday", f"'{cell}' {why}; left out, the contact imports without it")
    ]


def test_a_time_before_year_one_in_utc_is_left_out_or_rejects_consent() -> None:
    early = "0001-01-01T00:00:00+01:00"  # 31 December of year 0 in UTC
    row = parse(["email", "seen"], ["a@example.com", early], {"seen": "datetime"})
    assert row.attributes == {} and "is not an ISO 8601 time" in row.warnings[0][1]
    with pytest.raises(RowError, match="consent_at '0001-01-01T00:00:00\\+01:00' is not an ISO"):
        parse(["email", "consent_at"], ["a@example.com", early])


def test_a_first_name_over_200_characters_imports_cut_to_200_with_a_warning() -> None:
    long = "Ada" * 100
    row = parse(["email", "first_name"], ["a@example.com", long])
    assert row.first_name == long[:200]
    assert list(row.warnings) == [("first_name", "300 characters; kept the first 200")]


def test_cells_in_error_messages_are_escaped_and_cut_short() -> None:
    forged = "x\r\nleads.csv:9: forged\x1b[2J\u202e" + "y" * 200
    with pytest.raises(RowError) as raised:
        parse(["email"], [forged])
    message = str(raised.value)
    assert message.startswith("'x\\r\\nleads.csv:9: forged\\x1b[2J\\u202eyyy")
    assert not any(character in message for character in "\r\n\x1b\u202e")
    row = parse(["email", "timezone"], ["a@example.com", "Europe/\x1b[31mRome"])
    assert row.warnings[0][1].startswith("'Europe/\\x1b[31mRome' is not an IANA time zone")


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


KINDS = ("string", "integer", "number", "boolean", "date", "datetime")


@given(st.sampled_from(KINDS), st.text())
def test_any_cell_in_a_typed_column_is_kept_as_its_type_or_left_out(kind: str, cell: str) -> None:
    try:
        row = parse(["email", "value"], ["a@example.com", cell], {"value": kind})
    except RowError as error:  # only a NUL character (or undecodable bytes) rejects the row
        assert "NUL" in str(error) or "undecodable" in str(error)
        return
    if "value" not in row.attributes:
        assert not cell.strip() or [name for name, _ in row.warnings] == ["value"]
        return
    value = row.attributes["value"]
    json.dumps(value, allow_nan=False)  # valid JSON: no NaN, no Infinity
    if kind == "integer":
        assert type(value) is int and -(2**63) <= value < 2**63
    elif kind == "number":
        assert type(value) is float and math.isfinite(value)
    elif kind == "boolean":
        assert type(value) is bool
    elif kind == "date":
        assert date.fromisoformat(value).isoformat() == value
    elif kind == "datetime":
        assert datetime.fromisoformat(value).utcoffset() == timedelta(0)
    else:
        assert value == unneutralise(cell.strip())
