"""The rhythm of a sequence, through the real engine over simulated days: a step's delay counts
from when the previous step was skipped or actually sent, and under the frequency cap the
message that has waited longest (or a high-priority step) takes a freed slot first."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mailer.campaigns.cap_queue import Waiting, first_in_line
from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.tables import outbox
from mailer.workspace import Workspace
from tests.campaigns.test_engine import MONDAY, add_event, deliver, status
from tests.conftest import SECRET, write_csv
from tests.helpers import run_import

SENDER = """
[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[lists.shop]
title = "Customers"
"""

# The case: "review" is skipped at hour 52; "loyalty" is five days after that.
LOYALTY = """
[campaigns.loyalty]
kind = "sequence"
list = "shop"
trigger = 'event "purchased"'
enroll_existing = true

[[campaigns.loyalty.steps]]
name = "thanks"
template = "welcome/1"
subject = "Thanks"
delay = "4h"

[[campaigns.loyalty.steps]]
name = "review"
template = "welcome/2"
subject = "How was it?"
delay = "2 days"
condition = 'event "reviewed"'
{branch}

[[campaigns.loyalty.steps]]
name = "loyalty"
template = "welcome/1"
subject = "Our loyalty club"
delay = "5 days"
"""

# Two steps two days apart, for the outage.
WELCOME = """
[campaigns.welcome]
kind = "sequence"
list = "shop"
trigger = 'joins list "shop"'
enroll_existing = true

[[campaigns.welcome.steps]]
name = "hello"
template = "welcome/1"
subject = "Hello"

[[campaigns.welcome.steps]]
name = "tips"
template = "welcome/2"
subject = "Tips"
delay = "2 days"
"""

# Under "2 per 3d": hello and promo fill the cap on Monday; the cart reminder (due Monday
# 13:00) and the welcome's tips (due Wednesday 10:00) both wait for Thursday.
CAPPED = (
    WELCOME
    + """
[campaigns.promo]
kind = "sequence"
list = "shop"
trigger = 'joins list "shop"'
enroll_existing = true

[[campaigns.promo.steps]]
name = "promo"
template = "welcome/1"
subject = "This week's beans"
delay = "1h"

[campaigns.cart]
kind = "sequence"
list = "shop"
trigger = 'event "cart_abandoned"'
enroll_existing = true

[[campaigns.cart.steps]]
name = "reminder"
template = "welcome/2"
subject = "You left something"
delay = "1h"
{priority}

[engine]
frequency_cap = "2 per 3d"
"""
)


def open_shop(tmp_path: Path, environ: dict[str, str], campaigns: str) -> Workspace:
    root = tmp_path / "shop"
    (root / "templates" / "welcome").mkdir(parents=True)
    footer = "<p>{{ sender.postal_address }}</p>"
    for name in ("1", "2"):
        (root / "templates" / "welcome" / f"{name}.html").write_text(f"<p>{name}</p>{footer}")
    (root / "settings.toml").write_text(textwrap.dedent(SENDER) + textwrap.dedent(campaigns))
    workspace = Workspace(load_settings(root / "settings.toml", environ=environ),
                          FrozenClock(MONDAY))  # fmt: skip
    run_import(workspace, write_csv(tmp_path / "shop.csv", """
        email,consent_at
        ada@example.com,2026-11-01
    """), "shop")  # fmt: skip
    return workspace


@pytest.fixture
def sqlite(tmp_path: Path) -> dict[str, str]:
    return {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/m.db"}


@pytest.fixture
def shop(request: pytest.FixtureRequest, tmp_path: Path,
         sqlite: dict[str, str]) -> Iterator[Workspace]:  # fmt: skip
    workspace = open_shop(tmp_path, sqlite, request.param)
    yield workspace
    workspace.close()


def hourly(workspace: Workspace, start: datetime, hours: int) -> None:
    """Tick every hour from `start`, delivering at once, as `tick --until` does."""
    for hour in range(hours + 1):
        moment = start + timedelta(hours=hour)
        tick(workspace.engine, workspace.settings, moment)
        deliver(workspace, moment)


def queued(workspace: Workspace) -> dict[str, datetime]:
    """When each step was queued (or skipped), by step name."""
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(outbox.c.step, outbox.c.queued_at).order_by(outbox.c.id))
        return {row.step: row.queued_at for row in rows}


def hours_after(start: datetime, moments: dict[str, datetime]) -> dict[str, float]:
    return {step: (at - start).total_seconds() / 3600 for step, at in moments.items()}


def statuses(workspace: Workspace) -> dict[str, str]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(outbox.c.step, outbox.c.status))
        return {row.step: row.status for row in rows}


BRANCH = """otherwise = "loyalty"

[[campaigns.loyalty.steps]]
name = "tips"
template = "welcome/2"
subject = "Tips"
delay = "1 day"
"""


@pytest.mark.parametrize("shop", [LOYALTY.format(branch="")], indirect=True)
def test_a_skipped_step_makes_the_next_wait_its_own_delay(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "website", "purchased", MONDAY)
    hourly(shop, MONDAY, 24 * 8)
    # thanks at hour 4; review skipped at 4 + 48 = 52; loyalty five days later: 172, not 52.
    assert hours_after(MONDAY, queued(shop)) == {"thanks": 4, "review": 52, "loyalty": 172}
    assert statuses(shop) == {"thanks": "sent", "review": "skipped", "loyalty": "sent"}


@pytest.mark.parametrize("shop", [LOYALTY.format(branch=BRANCH)], indirect=True)
def test_a_branch_target_waits_its_own_delay_after_the_skip(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "website", "purchased", MONDAY)
    hourly(shop, MONDAY, 24 * 8)
    # The branch jumps over tips (a day): loyalty's own five days count from the skip.
    assert hours_after(MONDAY, queued(shop)) == {"thanks": 4, "review": 52, "loyalty": 172}
    assert status(shop, "ada@example.com", "loyalty") == ("completed", None)


def test_after_an_outage_the_next_step_waits_its_delay_from_the_real_send(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    shop = open_shop(tmp_path, environ, WELCOME)
    try:
        tick(shop.engine, shop.settings, MONDAY)  # hello queued; then eight days of outage
        back = MONDAY + timedelta(days=8)
        tick(shop.engine, shop.settings, back)  # tips was due on Wednesday: hello is not out
        assert "tips" not in queued(shop)
        assert status(shop, "ada@example.com") == ("active", "waiting for hello to be sent")
        deliver(shop, back + timedelta(minutes=3))
        hourly(shop, back + timedelta(hours=1), 47)  # until two days after hello went out
        assert "tips" not in queued(shop)
        assert status(shop, "ada@example.com") == ("active", None)
        tick(shop.engine, shop.settings, back + timedelta(days=2, minutes=3))
        assert queued(shop)["tips"] == back + timedelta(days=2, minutes=3)
    finally:
        shop.close()


def test_a_deferred_message_holds_the_next_step_and_a_failed_one_releases_it(
    tmp_path: Path, sqlite: dict[str, str]
) -> None:
    shop = open_shop(tmp_path, sqlite, WELCOME)
    try:
        tick(shop.engine, shop.settings, MONDAY)
        set_hello(shop, "deferred")  # the relay said 4xx: it is tried again later
        tick(shop.engine, shop.settings, MONDAY + timedelta(days=2))
        assert "tips" not in queued(shop)
        set_hello(shop, "failed")  # then gave up: nobody received hello
        later = MONDAY + timedelta(days=2, hours=1)
        tick(shop.engine, shop.settings, later)  # two days after hello was queued: due
        assert queued(shop)["tips"] == later
    finally:
        shop.close()


def set_hello(workspace: Workspace, state: str) -> None:
    with workspace.engine.begin() as connection:
        connection.execute(update(outbox).where(outbox.c.step == "hello").values(status=state))


@pytest.mark.parametrize("shop", [CAPPED.format(priority="")], indirect=True)
def test_the_message_waiting_longest_takes_a_freed_cap_slot(shop: Workspace) -> None:
    hourly(shop, MONDAY, 1)  # hello at 10:00, promo at 11:00: the cap (2 per 3d) is full
    add_event(shop, "ada@example.com", "website", "cart_abandoned", MONDAY + timedelta(hours=1))
    hourly(shop, MONDAY + timedelta(hours=2), 24 * 3)
    assert status(shop, "ada@example.com", "cart")[1] is None
    # Thursday 10:00 hello leaves the window: the reminder (waiting since Monday 13:00) goes,
    # not tips (due Wednesday 10:00); tips takes the next slot, when promo leaves at 11:00.
    thursday = MONDAY + timedelta(days=3)
    assert queued(shop)["reminder"] == thursday
    assert queued(shop)["tips"] == thursday + timedelta(hours=1)


@pytest.mark.parametrize("shop", [CAPPED.format(priority='priority = "high"')], indirect=True)
def test_a_high_priority_step_goes_before_one_that_waited_longer(shop: Workspace) -> None:
    hourly(shop, MONDAY, 1)
    hourly(shop, MONDAY + timedelta(hours=2), 24 * 2 - 2)  # to Wednesday 10:00: tips capped
    assert status(shop, "ada@example.com")[1] == "frequency cap (2 per 3d)"
    wednesday = MONDAY + timedelta(days=2)
    add_event(shop, "ada@example.com", "website", "cart_abandoned", wednesday)
    hourly(shop, wednesday + timedelta(hours=1), 24)
    thursday = MONDAY + timedelta(days=3)
    assert queued(shop)["reminder"] == thursday
    assert queued(shop)["tips"] == thursday + timedelta(hours=1)


def test_ties_under_the_cap_are_broken_by_enrollment_not_by_tick_order() -> None:
    same = MONDAY + timedelta(hours=3)
    waiting = [Waiting(7, 1, "normal", same), Waiting(5, 1, "normal", same),
               Waiting(9, 1, "low", MONDAY), Waiting(8, 2, "normal", same)]  # fmt: skip
    assert first_in_line(waiting, {1: 1}, 2) == {5, 8}
    assert first_in_line(reversed(waiting), {1: 2, 2: 0}, 2) == {5, 7}
