from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "expected"), [
    ("0m", timedelta(0)), ("30m", timedelta(minutes=30)), ("36h", timedelta(hours=36)),
    ("2 days", timedelta(days=2)), ("1 week 2 days", timedelta(days=9)),
    ("1d12h", timedelta(days=1, hours=12)), (" 90 Days ", timedelta(days=90)),
])  # fmt: skip
def test_durations_as_marketers_write_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["2 dayz", "", "days", "2", "-1d", "1.5d"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**8))
def test_format_reads_back(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value
