"""Date triggers (birthdays, anniversaries) at a wall-clock time on the contact's own day, and
skipped once that day's window has passed: the real engine, real databases, a moved clock."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from mailer.campaigns.date_steps import day_window
from mailer.campaigns.engine import tick
from mailer.campaigns.plan import plan
from mailer.check import check_project
from mailer.clock import FrozenClock
from mailer.config import Step, load_settings
from mailer.errors import SettingsError
from mailer.store.tables import contacts, enrollments, outbox
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import run_import

SETTINGS = """
[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[lists.shop]
title = "Customers"

[attributes]
birthday = "date"

[campaigns.birthday]
kind = "sequence"
list = "shop"
trigger = 'date "birthday"'

[[campaigns.birthday.steps]]
name = "wishes"
template = "birthday"
subject = "Happy birthday!"
"""
AT_NINE = 'at = "09:00"\n'
NINE_HOURS = 'delay = "9h"\n'  # the older spelling: hours from local midnight, on the clock
QUIET = '\n[engine]\nquiet_hours = "21:00-08:00"\n'
EVERY = timedelta(minutes=5)  # how often the daemon ticks in these tests


def local(day: date, hour: int, minute: int, zone: str) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def open_shop(tmp_path: Path, environ: dict[str, str], step: str = AT_NINE,
              extra: str = "") -> Iterator[Workspace]:  # fmt: skip
    root = tmp_path / "shop"
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(SETTINGS) + step + extra)
    settings = load_settings(root / "settings.toml", environ=environ)
    workspace = Workspace(settings, FrozenClock(datetime(2027, 1, 4, 12, 0, tzinfo=UTC)))
    yield workspace
    workspace.close()


def add_contact(shop: Workspace, tmp_path: Path, email: str, zone: str, birthday: str,
                imported_at: datetime) -> None:  # fmt: skip
    clock = shop.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(imported_at - clock.now())
    path = write_csv(tmp_path / f"{email}.csv", f"""
        email,timezone,birthday,consent_at
        {email},{zone},{birthday},2027-01-01
    """)  # fmt: skip
    run_import(shop, path, "shop")


def ticks(shop: Workspace, start: datetime, end: datetime) -> None:
    """Tick every EVERY from start to end, both included, as the daemon would."""
    moment = start
    while moment <= end:
        tick(shop.engine, shop.settings, moment)
        moment += EVERY


def messages(shop: Workspace, email: str) -> list[tuple[str, str | None, datetime]]:
    """(status, reason, queued_at) of the contact's birthday outbox rows, oldest first."""
    with shop.engine.connect() as connection:
        rows = connection.execute(
            select(outbox.c.status, outbox.c.reason, outbox.c.queued_at)
            .join(contacts, contacts.c.id == outbox.c.contact_id)
            .where(contacts.c.email == email, outbox.c.campaign == "birthday")
            .order_by(outbox.c.id)
        )  # fmt: skip
        return [(row.status, row.reason, row.queued_at) for row in rows]


def enrollment_states(shop: Workspace, email: str) -> list[str]:
    with shop.engine.connect() as connection:
        rows = connection.execute(
            select(enrollments.c.status)
            .join(contacts, contacts.c.id == enrollments.c.contact_id)
            .where(contacts.c.email == email).order_by(enrollments.c.cycle)
        )  # fmt: skip
        return [row.status for row in rows]


DAYLIGHT_SAVING_DAYS = [
    ("Europe/London", date(2027, 3, 28)),  # clocks go forward at 01:00
    ("Europe/London", date(2027, 10, 31)),  # and back at 02:00
    ("America/New_York", date(2027, 3, 14)),
    ("America/New_York", date(2027, 11, 7)),
]


@pytest.mark.parametrize("spelling", [AT_NINE, NINE_HOURS], ids=["at", "delay"])
@pytest.mark.parametrize(("zone", "day"), DAYLIGHT_SAVING_DAYS, ids=lambda v: str(v))
def test_birthday_wishes_go_at_nine_local_on_daylight_saving_days(
    tmp_path: Path, environ: dict[str, str], zone: str, day: date, spelling: str
) -> None:
    for shop in open_shop(tmp_path, environ, spelling):
        birthday = day.replace(year=1990).isoformat()
        add_contact(shop, tmp_path, "ada@example.com", zone, birthday, local(day, 0, 0, zone)
                    - timedelta(days=7))  # fmt: skip
        ticks(shop, local(day, 5, 0, zone), local(day, 8, 55, zone))
        assert messages(shop, "ada@example.com") == []
        ticks(shop, local(day, 9, 0, zone), local(day, 12, 0, zone))
        assert messages(shop, "ada@example.com") == [("queued", None, local(day, 9, 0, zone))]


@pytest.mark.parametrize("quiet_hours", ["", QUIET], ids=["no quiet hours", "quiet hours"])
def test_imported_at_22_58_on_the_birthday_gets_nothing_that_night_nor_next_morning(
    tmp_path: Path, environ: dict[str, str], quiet_hours: str
) -> None:
    zone, day = "Europe/London", date(2027, 3, 28)
    for shop in open_shop(tmp_path, environ, extra=quiet_hours):
        ticks(shop, local(day, 6, 0, zone), local(day, 10, 25, zone))
        add_contact(shop, tmp_path, "early@example.com", zone, "1990-03-28",
                    local(day, 10, 30, zone))  # fmt: skip
        ticks(shop, local(day, 10, 30, zone), local(day, 22, 55, zone))
        add_contact(shop, tmp_path, "late@example.com", zone, "1990-03-28",
                    local(day, 22, 58, zone))  # fmt: skip
        ticks(shop, local(day, 23, 0, zone), local(day + timedelta(days=1), 12, 0, zone))
        # Imported at 10:30: still their day; the next tick looks at contacts changed since
        # the hourly scan, finds them, and the wishes go then (not at the 11:00 scan).
        assert messages(shop, "early@example.com") == [("queued", None, local(day, 10, 30, zone))]
        reason = "past its day (birthday 2027-03-28, Europe/London)"
        assert messages(shop, "late@example.com") == [
            ("skipped", reason, local(day, 23, 0, zone))  # found by the 23:00 scan
        ]
        assert enrollment_states(shop, "late@example.com") == ["completed"]
        # Next year the same contact gets the wishes, at 09:00 on the day.
        next_year = date(2028, 3, 28)
        ticks(shop, local(next_year, 6, 0, zone), local(next_year, 12, 0, zone))
        assert messages(shop, "late@example.com")[1:] == [
            ("queued", None, local(next_year, 9, 0, zone))
        ]
        assert enrollment_states(shop, "late@example.com") == ["completed", "completed"]


def test_a_send_window_that_stays_shut_all_day_skips_the_message(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    zone, day = "Europe/London", date(2027, 3, 28)  # a Sunday
    step = AT_NINE + 'send_window = "09:00-18:00 weekdays"\n'
    for shop in open_shop(tmp_path, environ, step):
        add_contact(shop, tmp_path, "ada@example.com", zone, "1990-03-28",
                    local(day, 0, 0, zone) - timedelta(days=7))  # fmt: skip
        ticks(shop, local(day, 6, 0, zone), local(day + timedelta(days=1), 10, 0, zone))
        assert [row[:2] for row in messages(shop, "ada@example.com")] == [
            ("skipped", "past its day (birthday 2027-03-28, Europe/London)")
        ]


def test_the_plan_agrees_with_the_ticks(tmp_path: Path, environ: dict[str, str]) -> None:
    zone, day = "Europe/London", date(2027, 3, 28)
    for shop in open_shop(tmp_path, environ, extra=QUIET):
        add_contact(shop, tmp_path, "ada@example.com", zone, "1990-03-28",
                    local(day, 0, 0, zone) - timedelta(days=7))  # fmt: skip
        add_contact(shop, tmp_path, "late@example.com", zone, "1985-03-28",
                    local(day, 22, 58, zone))  # fmt: skip
        midnight = local(day, 0, 0, zone)
        whole_day = plan(shop.engine, shop.settings, midnight, timedelta(hours=36))
        # ada at 09:00 BST; late (in the database already at midnight here) also at 09:00
        assert whole_day.first("birthday", "wishes") == local(day, 9, 0, zone)
        assert sum(whole_day.queued[("birthday", "wishes")].values()) == 2
        evening = plan(shop.engine, shop.settings, local(day, 23, 0, zone), timedelta(hours=12))
        assert ("birthday", "wishes") not in evening.queued
        reason = "wishes: past its day (birthday 2027-03-28, Europe/London)"
        assert evening.held_back[("birthday", reason)] == 2


def test_the_day_window_runs_twelve_hours_on_the_clock_and_ends_with_the_day() -> None:
    step = Step(name="wishes", template="t", subject="s", at=time(9, 0))
    midnight = local(date(2027, 3, 28), 0, 0, "Europe/London")
    window = day_window(step, midnight, "Europe/London")
    assert window.opens == datetime(2027, 3, 28, 8, 0, tzinfo=UTC)  # 09:00 BST
    assert window.closes == datetime(2027, 3, 28, 20, 0, tzinfo=UTC)  # 21:00 BST
    evening = Step(name="wishes", template="t", subject="s", at=time(18, 30))
    late = day_window(evening, midnight, "Europe/London")
    assert late.closes == datetime(2027, 3, 28, 23, 0, tzinfo=UTC)  # midnight BST
    day_after = Step(name="wishes", template="t", subject="s", delay=timedelta(days=1, hours=9))
    assert day_window(day_after, midnight, "Europe/London").day == date(2027, 3, 29)


@pytest.mark.parametrize(("step", "problem"), [
    ('at = "9am"\n', 'is not a time of day (write e.g. "09:00")'),
    ('at = "09:00"\ndelay = "1h"\n', "whole days"),
    ('delay = "1h"\n[[campaigns.birthday.steps]]\nname = "more"\ntemplate = "t"\n'
     'subject = "s"\nat = "10:00"\n', "first step of a date trigger"),
])  # fmt: skip
def test_at_is_a_time_of_day_for_the_first_step_of_a_date_trigger(
    tmp_path: Path, environ: dict[str, str], step: str, problem: str
) -> None:
    (tmp_path / "settings.toml").write_text(textwrap.dedent(SETTINGS) + step)
    with pytest.raises(SettingsError, match=re.escape(problem)):
        load_settings(tmp_path / "settings.toml", environ=environ)


@pytest.mark.parametrize(("step", "extra", "expected"), [
    (NINE_HOURS, "", [("warning", '.delay: "9h" after a date is read on the contact\'s clock '
                                  '(09:00); write at = "09:00"')]),
    ('at = "22:00"\n', QUIET, [("error", ": quiet hours or the send window shut its whole "
                                         "day's window")]),
    ('at = "09:00"\nsend_window = "09:00-18:00 sat"\n', "", []),  # Saturdays only: fine
    (AT_NINE, QUIET, []),
])  # fmt: skip
def test_check_says_how_to_write_the_time_and_when_every_message_would_be_skipped(
    tmp_path: Path, environ: dict[str, str], step: str, extra: str,
    expected: list[tuple[str, str]],
) -> None:  # fmt: skip
    for shop in open_shop(tmp_path, environ, step, extra):
        report = check_project(shop.settings, datetime(2027, 1, 4, tzinfo=UTC))
        about_the_time = [
            (problem.severity, problem.message.partition("steps[0]")[2])
            for problem in report.problems
            if "birthday.steps[0]" in problem.message and ".template" not in problem.message
        ]  # (the test has no templates: check says so too)
        assert len(about_the_time) == len(expected)
        for (severity, message), (wanted, start) in zip(about_the_time, expected, strict=True):
            assert (severity, message[: len(start)]) == (wanted, start)
