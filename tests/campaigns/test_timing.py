from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from mailer.campaigns.timing import next_opening, parse_window, pick_variant


def test_windows_parse() -> None:
    window = parse_window("09:00-18:00 weekdays")
    assert window.days == frozenset(range(5))
    assert parse_window("10:00-16:00 sat-sun").days == frozenset({5, 6})
    assert parse_window("08:00-20:00 mon,wed,fri").days == frozenset({0, 2, 4})
    assert parse_window("08:00-20:00 fri-mon").days == frozenset({4, 5, 6, 0})
    for bad in ("9-18", "18:00-09:00", "09:00-18:00 someday", "25:00-26:00"):
        with pytest.raises(ValueError, match=r"send window|hours|end after|days are"):
            parse_window(bad)


def test_inside_the_window_means_now() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday, 11:00 in Rome
    assert next_opening(parse_window("09:00-18:00 weekdays"), now, "Europe/Rome") == now


def test_outside_it_waits_for_the_contacts_own_morning() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # 19:00 in Tokyo, Monday
    opening = next_opening(parse_window("09:00-18:00 weekdays"), now, "Asia/Tokyo")
    assert opening == datetime(2026, 11, 24, 0, 0, tzinfo=UTC)  # Tuesday 09:00 JST


def test_a_friday_evening_waits_for_monday() -> None:
    friday = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    opening = next_opening(parse_window("09:00-18:00 weekdays"), friday, "Europe/London")
    assert opening == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_daylight_saving_change_keeps_local_nine_oclock() -> None:
    saturday = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # clocks go forward on Sunday 29th
    opening = next_opening(parse_window("09:00-18:00 weekdays"), saturday, "Europe/Berlin")
    assert opening == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)  # 09:00 CEST, no longer CET


def test_variants_are_deterministic_and_follow_the_weights() -> None:
    weights = {"A": 3, "B": 1}
    picks = [pick_variant(contact, "welcome", "hello", weights) for contact in range(4000)]
    assert picks == [pick_variant(contact, "welcome", "hello", weights) for contact in range(4000)]
    share = Counter(picks)["B"] / len(picks)
    assert 0.22 < share < 0.28
    assert pick_variant(1, "welcome", "hello", {"A": 1}) == "A"
