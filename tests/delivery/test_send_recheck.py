"""At sending, delivery asks again what the engine asked at queueing: a goal reached, an
enrollment ended, a step's condition no longer true or a broadcast's segment left means the
message is skipped with the reason, never sent. Real SMTP server (aiosmtpd), SQLite and
PostgreSQL."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from mailer.campaigns.engine import tick
from mailer.contacts.events import record_event
from mailer.delivery import still_wanted
from mailer.delivery.claims import OutboxMessage
from mailer.delivery.pauses import pause, resume
from mailer.store.tables import contacts, enrollments, outbox
from mailer.workspace import Workspace
from tests.campaigns.test_engine import add_event
from tests.conftest import NOW, write_csv
from tests.delivery.helpers import deliver
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import run_import

Opener = Callable[..., Workspace]

SHOP = """
database_url = "sqlite:///.mailer/mailer.db"
secret_key_file = ".mailer/secret.key"

[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[attributes]
orders = "integer"

[lists.shop]
title = "Customers"

[segments]
buyers = "orders >= 1"

[campaigns.cart]
kind = "sequence"
list = "shop"
trigger = 'event "cart_abandoned"'
goal = 'GOAL'
enroll_existing = true

[[campaigns.cart.steps]]
name = "reminder"
template = "welcome/1"
subject = "You left something in your cart"
delay = "1h"

[campaigns.tour]
kind = "sequence"
list = "shop"
trigger = 'event "browsed"'
enroll_existing = true

[[campaigns.tour.steps]]
name = "intro"
template = "welcome/1"
subject = "Intro"

[[campaigns.tour.steps]]
name = "nudge"
template = "welcome/1"
subject = "Did you see our intro?"
delay = "1 day"
condition = "not opened previous"
otherwise = "story"

[[campaigns.tour.steps]]
name = "more"
template = "welcome/1"
subject = "More"
delay = "1 day"

[[campaigns.tour.steps]]
name = "story"
template = "welcome/1"
subject = "Our story"
delay = "1 day"

[campaigns.promo]
kind = "broadcast"
list = "shop"
segment = "buyers"
template = "welcome/1"
subject = "For our customers"
send_at = "2026-11-25T09:00Z"
"""

PURCHASED = 'event "purchased"'
PROMO = timedelta(days=1, hours=23)  # the promo's send_at


def open_shop(open_workspace: Opener, project: Path, goal: str = PURCHASED) -> Workspace:
    """The shop's settings (with `goal` for the cart), then ada, ken and bob as customers
    (orders 2, 1, 0)."""
    settings = textwrap.dedent(SHOP).replace("'GOAL'", f"'{goal}'")
    (project / "settings.toml").write_text(settings)
    workspace = open_workspace()
    customers(workspace, project, ada=2, ken=1, bob=0)
    return workspace


def customers(workspace: Workspace, project: Path, **orders: int) -> None:
    """Import (or update) customers of the shop list with their number of orders."""
    path = write_csv(project / "shop.csv", "email,first_name,orders,consent_at\n" + "".join(
        f"{name}@example.com,{name.title()},{count},2026-01-01\n"
        for name, count in orders.items()))  # fmt: skip
    run_import(workspace, path, "shop")


def event(workspace: Workspace, name: str, who: str, after: timedelta) -> None:
    with workspace.engine.begin() as connection:
        record_event(connection, f"{who}@example.com", name, NOW + after)


def ticked(workspace: Workspace, after: timedelta) -> None:
    tick(workspace.engine, workspace.settings, NOW + after)


def outbox_rows(workspace: Workspace) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(who, campaign, step) -> (status, reason)."""
    with workspace.engine.connect() as connection:
        found = connection.execute(
            select(contacts.c.email, outbox.c.campaign, outbox.c.step, outbox.c.status,
                   outbox.c.reason).join(contacts, contacts.c.id == outbox.c.contact_id)
        )  # fmt: skip
        return {(row.email.split("@")[0], row.campaign, row.step): (row.status, row.reason)
                for row in found}  # fmt: skip


def enrollment(workspace: Workspace, who: str, campaign: str) -> tuple[str, str | None]:
    with workspace.engine.connect() as connection:
        row = connection.execute(
            select(enrollments.c.status, enrollments.c.reason)
            .join(contacts, contacts.c.id == enrollments.c.contact_id)
            .where(contacts.c.email == f"{who}@example.com", enrollments.c.campaign == campaign)
        ).one()  # fmt: skip
    return row.status, row.reason


def received(server: ScriptedSmtpServer) -> list[str]:
    return sorted(message.recipient for message in server.received)


def pause_cart(workspace: Workspace, paused: bool) -> None:
    with workspace.engine.begin() as connection:
        if paused:
            pause(connection, workspace.settings, "cart", "by the operator", NOW)
        else:
            assert resume(connection, workspace.settings, "cart")


GOAL_SKIP = ("skipped", 'at sending: goal reached (event "purchased")')


def test_a_cart_reminder_queued_while_paused_is_not_sent_after_the_purchase(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_shop(open_workspace, project)
    event(workspace, "purchased", "ada", timedelta(days=-1))  # before this run: does not count
    for who in ("ada", "ken"):
        event(workspace, "cart_abandoned", who, timedelta(0))
    ticked(workspace, timedelta(0))
    pause_cart(workspace, True)
    ticked(workspace, timedelta(hours=1))  # the reminders are queued, the campaign paused
    assert deliver(workspace, timedelta(hours=1)).sent == 0
    event(workspace, "purchased", "ken", timedelta(hours=2))
    pause_cart(workspace, False)
    report = deliver(workspace, timedelta(hours=3))
    assert (report.sent, report.skipped) == (1, 1)
    assert received(smtp_server) == ["ada@example.com"]
    rows = outbox_rows(workspace)
    assert rows["ken", "cart", "reminder"] == GOAL_SKIP
    assert rows["ada", "cart", "reminder"][0] == "sent"
    assert enrollment(workspace, "ken", "cart") == ("converted", 'goal reached: event "purchased"')
    assert enrollment(workspace, "ada", "cart")[0] == "completed"


def test_a_deferred_message_is_rechecked_at_its_retry(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_shop(open_workspace, project)
    event(workspace, "cart_abandoned", "ken", timedelta(0))
    ticked(workspace, timedelta(0))
    ticked(workspace, timedelta(hours=1))
    smtp_server.script("ken@example.com", "451 4.3.0 Try again later")
    assert deliver(workspace, timedelta(hours=1)).deferred == 1
    event(workspace, "purchased", "ken", timedelta(hours=1, minutes=2))
    report = deliver(workspace, timedelta(hours=2))
    assert (report.sent, report.skipped) == (0, 1)
    assert received(smtp_server) == []
    assert outbox_rows(workspace)["ken", "cart", "reminder"] == GOAL_SKIP
    assert enrollment(workspace, "ken", "cart")[0] == "converted"


def test_a_broadcast_skips_who_left_its_segment_and_sends_to_who_is_still_in_it(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_shop(open_workspace, project)
    ticked(workspace, PROMO)
    rows = outbox_rows(workspace)
    assert {who for who, campaign, _ in rows if campaign == "promo"} == {"ada", "ken"}
    customers(workspace, project, ken=0)  # a refund: ken is no longer a buyer
    report = deliver(workspace, PROMO)
    assert (report.sent, report.skipped) == (1, 1)
    assert received(smtp_server) == ["ada@example.com"]
    rows = outbox_rows(workspace)
    assert rows["ken", "promo", "broadcast"] == (
        "skipped",
        "at sending: no longer in segment buyers",
    )
    assert rows["ada", "promo", "broadcast"][0] == "sent"


def test_one_chunk_with_sequences_and_a_broadcast_rechecks_each_its_own_way(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_shop(open_workspace, project)
    for who in ("ada", "ken", "bob"):
        event(workspace, "cart_abandoned", who, timedelta(0))
    ticked(workspace, timedelta(0))
    pause_cart(workspace, True)
    ticked(workspace, timedelta(hours=1))  # the cart reminders, held
    ticked(workspace, PROMO)  # the promo to ada and ken
    event(workspace, "purchased", "ada", PROMO + timedelta(minutes=1))
    customers(workspace, project, ken=0)
    pause_cart(workspace, False)
    report = deliver(workspace, PROMO + timedelta(minutes=2))  # all in one claimed chunk
    assert (report.sent, report.skipped) == (3, 2)
    assert received(smtp_server) == ["ada@example.com", "bob@example.com", "ken@example.com"]
    rows = outbox_rows(workspace)
    assert rows["ada", "cart", "reminder"] == GOAL_SKIP
    assert rows["ken", "promo", "broadcast"][1] == "at sending: no longer in segment buyers"
    assert [rows[key][0] for key in [("ada", "promo", "broadcast"), ("ken", "cart", "reminder"),
                                     ("bob", "cart", "reminder")]] == ["sent"] * 3  # fmt: skip


def test_an_enrollment_that_ended_after_queueing_sends_nothing_more(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_shop(open_workspace, project)
    event(workspace, "cart_abandoned", "ken", timedelta(0))
    ticked(workspace, timedelta(0))
    pause_cart(workspace, True)
    ticked(workspace, timedelta(hours=1))
    with workspace.engine.begin() as connection:  # as the engine ends it when ken leaves
        connection.execute(enrollments.update().values(status="exited", reason="left the list"))
    pause_cart(workspace, False)
    assert deliver(workspace, timedelta(hours=2)).skipped == 1
    assert received(smtp_server) == []
    assert outbox_rows(workspace)["ken", "cart", "reminder"] == (
        "skipped", "at sending: the sequence ended (exited: left the list)")  # fmt: skip


def test_a_condition_false_at_sending_skips_the_step_and_takes_its_branch(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_shop(open_workspace, project)
    event(workspace, "browsed", "ken", timedelta(0))
    ticked(workspace, timedelta(0))
    assert deliver(workspace).sent == 1  # the tour's intro
    ticked(workspace, timedelta(days=1))  # ken has not opened the intro: the nudge is queued
    add_event(workspace, "ken@example.com", "open", "tour", NOW + timedelta(days=1, minutes=1),
              "intro")  # fmt: skip
    assert deliver(workspace, timedelta(days=1, minutes=2)).skipped == 1
    assert outbox_rows(workspace)["ken", "tour", "nudge"] == (
        "skipped", "at sending: condition: not opened previous")  # fmt: skip
    ticked(workspace, timedelta(days=2, minutes=3))  # as the engine's skip: to the story
    steps = {step for who, campaign, step in outbox_rows(workspace) if campaign == "tour"}
    assert steps == {"intro", "nudge", "story"}


def test_a_broken_goal_holds_its_campaign_back_and_not_the_others(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_shop(open_workspace, project)
    event(workspace, "cart_abandoned", "ken", timedelta(0))
    event(workspace, "browsed", "ada", timedelta(0))
    ticked(workspace, timedelta(0))
    ticked(workspace, timedelta(hours=1))
    # The marketer edits the goal while the reminder waits: it no longer compiles.
    broken = open_shop(open_workspace, project, goal='orders > "many" and event "x"')
    report = deliver(broken, timedelta(hours=1))
    assert (report.sent, report.deferred) == (1, 1)  # the tour's intro goes; the reminder waits
    assert received(smtp_server) == ["ada@example.com"]
    status, reason = outbox_rows(broken)["ken", "cart", "reminder"]
    assert status == "deferred" and str(reason).startswith("cannot recheck cart: ")


def test_a_message_of_a_campaign_removed_from_settings_is_skipped(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_shop(open_workspace, project)
    event(workspace, "cart_abandoned", "ken", timedelta(0))
    ticked(workspace, timedelta(0))
    ticked(workspace, timedelta(hours=1))
    settings = (project / "settings.toml").read_text()
    start, end = settings.index("[campaigns.cart]"), settings.index("[campaigns.tour]")
    (project / "settings.toml").write_text(settings[:start] + settings[end:])
    assert deliver(open_workspace(), timedelta(hours=1)).skipped == 1
    assert received(smtp_server) == []
    assert outbox_rows(workspace)["ken", "cart", "reminder"] == (
        "skipped", "at sending: the campaign is no longer in settings")  # fmt: skip


def test_a_database_that_went_away_stops_the_recheck_instead_of_deferring(
    open_workspace: Opener, project: Path, database_url: str
) -> None:
    """A connection the server cut off (a restart) is no fault of the campaign: the error
    reaches the worker, which gives its rows back and reconnects, rather than deferring each
    message by the retry backoff (minutes of delay for nothing)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a server that cuts a connection off is PostgreSQL's case")
    workspace = open_shop(open_workspace, project)
    event(workspace, "cart_abandoned", "ken", timedelta(0))
    ticked(workspace, timedelta(0))
    ticked(workspace, timedelta(hours=1))
    with workspace.engine.connect() as connection:
        queued = connection.execute(select(outbox.c.id, outbox.c.contact_id)).one()
        backend = connection.scalar(text("SELECT pg_backend_pid()"))
        with workspace.engine.connect() as other:
            other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        message = OutboxMessage(queued.id, "cart", "reminder", queued.contact_id, None, 1,
                                NOW, reclaimed=False)  # fmt: skip
        with pytest.raises(DBAPIError) as cut_off:
            still_wanted.recheck(connection, workspace.settings, [message], NOW)
    assert cut_off.value.connection_invalidated
