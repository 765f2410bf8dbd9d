from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, NullPool, cast, create_engine, literal, select

from mailer.campaigns.timing import (
    POINTS,
    inside_all,
    next_opening,
    overlap,
    parse_window,
    pick_variant,
    variant_bounds,
    variant_key,
    variant_picker,
    variant_point,
)


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


def test_inside_all_windows_finds_the_first_moment_every_window_allows() -> None:
    window, awake = parse_window("10:00-18:00 weekdays"), parse_window("08:00-21:00")
    friday_night = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)  # 23:00 in Rome
    assert inside_all([awake], friday_night, "Europe/Rome") == datetime(2026, 11, 28, 7, 0,
                                                                        tzinfo=UTC)  # fmt: skip
    # Saturday 08:00 is awake but outside the weekday window: Monday 10:00 in Rome.
    assert inside_all([awake, window], friday_night, "Europe/Rome") == datetime(
        2026, 11, 30, 9, 0, tzinfo=UTC)  # fmt: skip
    monday_noon = datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
    assert inside_all([awake, window], monday_noon, "Europe/Rome") == monday_noon
    assert inside_all([], friday_night, "Europe/Rome") == friday_night
    with pytest.raises(ValueError, match="never overlap"):
        inside_all([parse_window("08:00-09:00"), parse_window("10:00-11:00")], monday_noon, "UTC")


def test_variants_are_deterministic_and_follow_the_weights() -> None:
    weights = {"A": 3, "B": 1}
    picks = [pick_variant(contact, "welcome", "hello", weights) for contact in range(4000)]
    assert picks == [pick_variant(contact, "welcome", "hello", weights) for contact in range(4000)]
    share = Counter(picks)["B"] / len(picks)
    assert 0.22 < share < 0.28
    assert pick_variant(1, "welcome", "hello", {"A": 1}) == "A"


def test_two_tests_split_the_same_contacts_independently() -> None:
    halves = {"A": 1, "B": 1}
    for first, second in [(("welcome", "hello"), ("spring_launch", "broadcast")),
                          (("welcome", "hello"), ("welcome", "tips")),
                          (("a", "b"), ("a", "c"))]:  # fmt: skip
        agree = sum(pick_variant(contact, *first, halves) == pick_variant(contact, *second, halves)
                    for contact in range(1, 1001))  # fmt: skip
        assert 450 < agree < 550, (first, second, agree)


def test_neighbouring_contacts_do_not_alternate_in_a_pattern() -> None:
    halves = {"A": 1, "B": 1}
    picks = [pick_variant(contact, "welcome", "hello", halves) for contact in range(20000)]
    changes = sum(1 for one, next_one in pairwise(picks) if one != next_one)
    assert 9600 < changes < 10400  # a fair coin changes side about every other contact


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(contact_id=st.integers(min_value=1, max_value=2**63 - 1),
       campaign=st.text(max_size=20), step=st.text(max_size=20))  # fmt: skip
def test_the_database_puts_a_contact_where_python_does(
    database_url: str, contact_id: int, campaign: str, step: str
) -> None:
    key = variant_key(campaign, step)
    with create_engine(database_url, poolclass=NullPool).connect() as connection:
        in_sql = connection.execute(
            select(variant_point(cast(literal(contact_id), BigInteger), key))
        ).scalar_one()
    assert in_sql == variant_point(contact_id, key)
    assert 0 <= in_sql < POINTS


def test_a_window_may_close_at_midnight() -> None:
    window = parse_window("06:00-24:00")
    late = datetime(2026, 11, 23, 23, 59, 30, tzinfo=UTC)
    assert next_opening(window, late, "UTC") == late
    night = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    assert next_opening(window, night, "UTC") == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def test_windows_overlap_only_on_a_shared_day_and_hour() -> None:
    awake = parse_window("08:00-21:00")
    assert overlap(parse_window("09:00-18:00 weekdays"), awake)
    assert overlap(parse_window("20:00-23:00"), awake)
    assert not overlap(parse_window("21:00-23:00"), awake)
    assert not overlap(parse_window("09:00-18:00 sat"), parse_window("09:00-18:00 weekdays"))


def picked_before(contact_id: int, campaign: str, step: str, weights: dict[str, int]) -> str:
    """pick_variant as it was written before variant_picker (each call on its own)."""
    total = sum(weights.values())
    if total <= 0:
        return next(iter(weights))
    point = variant_point(contact_id, variant_key(campaign, step))
    for name, upper in variant_bounds(weights):
        if point * total < upper:
            return name
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "weights", [{"A": 1, "B": 1}, {"A": 1, "B": 3, "C": 2}, {"A": 0, "B": 1}, {"A": 0, "B": 0}]
)
def test_a_step_s_picker_picks_what_pick_variant_picked(weights: dict[str, int]) -> None:
    pick = variant_picker("welcome", "hello", weights)
    contacts = [*range(5000), 2**31 - 2, 2**31 - 1, 2**31, 10**12 + 7]
    assert [pick(c) for c in contacts] == [
        picked_before(c, "welcome", "hello", weights) for c in contacts
    ]
    assert [pick_variant(c, "welcome", "hello", weights) for c in contacts[:500]] == [
        pick(c) for c in contacts[:500]
    ]
