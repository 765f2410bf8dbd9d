"""Goals and `opened previous` count only this run of a sequence: what happened after the
contact entered it, not a purchase or an open from before (unless the goal says `ever`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.campaigns.segments import Engagement, Event, parse_segment
from mailer.store.tables import contacts, enrollments
from mailer.workspace import Workspace
from tests.campaigns.test_engine import MONDAY, add_event, at, deliver, open_shop, sent, status

GOALS = """
[campaigns.basket]
kind = "sequence"
list = "shop"
trigger = 'event "basket_left"'
goal = 'event "purchased"'
enroll_existing = true

[[campaigns.basket.steps]]
name = "reminder"
template = "cart/1"
subject = "You left something"
delay = "1h"

[campaigns.winback]
kind = "sequence"
list = "shop"
trigger = 'event "lapsed"'
goal = 'opened any'
enroll_existing = true

[[campaigns.winback.steps]]
name = "miss_you"
template = "cart/1"
subject = "We miss you"

[campaigns.loyal]
kind = "sequence"
list = "shop"
trigger = 'event "bought_twice"'
goal = 'event "purchased" ever'
enroll_existing = true

[[campaigns.loyal.steps]]
name = "thanks"
template = "cart/1"
subject = "Thank you"
delay = "1h"

[campaigns.nudge]
kind = "sequence"
list = "shop"
trigger = 'event "browsed"'
reentry = "1 day"
enroll_existing = true

[[campaigns.nudge.steps]]
name = "look"
template = "cart/1"
subject = "Still looking?"

[[campaigns.nudge.steps]]
name = "again"
template = "cart/1"
subject = "One more look"
delay = "1 day"
condition = "not opened previous"
"""


@pytest.fixture
def shop(tmp_path: Path, environ: dict[str, str]) -> Iterator[Workspace]:
    yield from open_shop(tmp_path, environ, GOALS)


def steps_of(workspace: Workspace, step: str) -> list[tuple[str, str, str, str | None]]:
    return [row for row in sent(workspace) if row[1] == step]


def test_a_repeat_buyer_who_leaves_a_basket_gets_the_reminder(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "website", "purchased", MONDAY - timedelta(days=30))
    add_event(shop, "ada@example.com", "website", "basket_left", MONDAY)
    at(shop, MONDAY)
    report = at(shop, MONDAY + timedelta(hours=2))
    assert report["converted"] == 0
    assert steps_of(shop, "reminder") == [("ada", "reminder", "queued", None)]
    assert status(shop, "ada@example.com", "basket") == ("completed", None)


def test_a_purchase_after_entering_converts(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "website", "purchased", MONDAY - timedelta(days=30))
    add_event(shop, "ada@example.com", "website", "basket_left", MONDAY)
    at(shop, MONDAY)
    add_event(shop, "ada@example.com", "website", "purchased", MONDAY + timedelta(minutes=30))
    report = at(shop, MONDAY + timedelta(hours=2))
    assert report["converted"] == 1
    assert steps_of(shop, "reminder") == []
    assert status(shop, "ada@example.com", "basket") == (
        "converted", 'goal reached: event "purchased"')  # fmt: skip


def test_an_old_open_does_not_reach_an_opened_any_goal(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "open", "welcome", MONDAY - timedelta(days=104), "hello")
    add_event(shop, "ada@example.com", "website", "lapsed", MONDAY)
    at(shop, MONDAY)
    assert steps_of(shop, "miss_you") == [("ada", "miss_you", "queued", None)]
    assert status(shop, "ada@example.com", "winback") == ("completed", None)


def test_a_past_buyer_gets_the_welcome(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "website", "purchased", MONDAY - timedelta(days=30))
    report = at(shop, MONDAY)
    assert report["converted"] == 0
    assert ("ada", "hello", "queued", None) in sent(shop)
    assert status(shop, "ada@example.com") == ("active", None)


def test_a_goal_written_ever_counts_before_the_run_too(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "website", "purchased", MONDAY - timedelta(days=30))
    add_event(shop, "ada@example.com", "website", "bought_twice", MONDAY)
    at(shop, MONDAY)
    assert at(shop, MONDAY + timedelta(hours=2))["converted"] == 1
    assert steps_of(shop, "thanks") == []


def test_opened_previous_reads_only_this_runs_previous_message(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "website", "browsed", MONDAY)
    at(shop, MONDAY)
    deliver(shop, MONDAY)
    add_event(shop, "ada@example.com", "open", "nudge", MONDAY + timedelta(hours=1), "look")
    at(shop, MONDAY + timedelta(days=1))
    assert steps_of(shop, "again") == [("ada", "again", "skipped", None)]  # opened: no nudge
    add_event(shop, "ada@example.com", "website", "browsed", MONDAY + timedelta(days=3))
    at(shop, MONDAY + timedelta(days=3))
    deliver(shop, MONDAY + timedelta(days=3))
    at(shop, MONDAY + timedelta(days=4))  # this run's "look" was not opened
    assert steps_of(shop, "again") == [("ada", "again", "skipped", None),
                                       ("ada", "again", "queued", None)]  # fmt: skip
    with shop.engine.connect() as connection:
        cycles = connection.scalars(
            select(enrollments.c.cycle).join(contacts, contacts.c.id == enrollments.c.contact_id)
            .where(enrollments.c.campaign == "nudge").order_by(enrollments.c.cycle)
        ).all()  # fmt: skip
    assert cycles == [0, 1]


def test_ever_is_read_after_events_and_opens() -> None:
    assert parse_segment('event "purchased" within 90d ever') == Event(
        "purchased", within=timedelta(days=90), ever=True)  # fmt: skip
    assert parse_segment("opened any ever") == Engagement("open", None, ever=True)
    assert parse_segment('event "purchased"') == Event("purchased")
