"""The engine over simulated days: a moved clock, real databases, no waiting."""

from __future__ import annotations

import json
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, update

from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.consent.person import withdraw
from mailer.store.tables import contacts, enrollments, events, outbox, trigger_cursors
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import run_import

MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

ENGINE_SETTINGS = """
[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[lists.newsletter]
title = "Newsletter"
double_opt_in = true

[lists.shop]
title = "Customers"

[campaigns.welcome]
kind = "sequence"
list = "newsletter"
trigger = 'joins list "newsletter"'
goal = 'event "purchased"'
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
condition = "not opened previous"
variants.B.subject = "Better coffee"

[[campaigns.welcome.steps]]
name = "offer"
template = "welcome/3"
subject = "Offer"
delay = "2 days"
send_window = "09:00-18:00 weekdays"

[campaigns.cart]
kind = "sequence"
list = "shop"
trigger = 'event "cart_abandoned"'
reentry = "7 days"
enroll_existing = true

[[campaigns.cart.steps]]
name = "reminder"
template = "cart/1"
subject = "You left something"
delay = "1h"
"""


@pytest.fixture
def shop(tmp_path: Path, environ: dict[str, str]) -> Iterator[Workspace]:
    yield from open_shop(tmp_path, environ)


def open_shop(tmp_path: Path, environ: dict[str, str], extra: str = "") -> Iterator[Workspace]:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(ENGINE_SETTINGS) + textwrap.dedent(extra))
    workspace = Workspace(load_settings(root / "settings.toml", environ=environ),
                          FrozenClock(MONDAY))  # fmt: skip
    run_import(workspace, write_csv(tmp_path / "news.csv", """
        email,timezone,consent_at,consent_confirmed_at
        ada@example.com,Europe/London,2026-11-23T09:00Z,2026-11-23T09:05Z
        ken@example.com,Asia/Tokyo,2026-11-23T09:00Z,2026-11-23T09:05Z
        bob@example.com,Europe/London,2026-11-23T09:00Z,
    """), "newsletter")  # fmt: skip
    run_import(workspace, write_csv(tmp_path / "shop.csv", """
        email,consent_at
        ada@example.com,2026-11-01
    """), "shop")  # fmt: skip
    yield workspace
    workspace.close()


def at(workspace: Workspace, moment: datetime) -> dict[str, int]:
    return tick(workspace.engine, workspace.settings, moment).as_dict()


def deliver(workspace: Workspace, moment: datetime) -> None:
    """What the delivery worker does to each queued message when the relay says 250: a step's
    delay counts from its previous message's delivery (campaigns/rhythm.py)."""
    with workspace.engine.begin() as connection:
        connection.execute(update(outbox).where(outbox.c.status == "queued")
                           .values(status="sent", sent_at=moment))  # fmt: skip


def sent(workspace: Workspace) -> list[tuple[str, str, str, str | None]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(contacts.c.email, outbox.c.step, outbox.c.status, outbox.c.variant)
            .join(contacts, contacts.c.id == outbox.c.contact_id).order_by(outbox.c.id)
        )  # fmt: skip
        return [(row.email.split("@")[0], row.step, row.status, row.variant) for row in rows]


def status(workspace: Workspace, email: str, campaign: str = "welcome") -> tuple[str, str | None]:
    with workspace.engine.connect() as connection:
        row = connection.execute(
            select(enrollments.c.status, enrollments.c.reason)
            .join(contacts, contacts.c.id == enrollments.c.contact_id)
            .where(contacts.c.email == email, enrollments.c.campaign == campaign)
        ).one()
    return row.status, row.reason


def add_event(workspace: Workspace, email: str, kind: str, name: str, when: datetime,
              step: str | None = None) -> None:  # fmt: skip
    with workspace.engine.begin() as connection:
        contact_id = connection.scalar(select(contacts.c.id).where(contacts.c.email == email))
        connection.execute(
            insert(events).values(
                contact_id=contact_id,
                kind=kind,
                name=name,
                step=step,
                properties={},
                occurred_at=when,
            )
        )


def test_a_sequence_over_a_week(shop: Workspace) -> None:
    first = at(shop, MONDAY)
    assert first["enrolled"] == 3 and first["queued"] == 2  # bob has not confirmed yet
    assert sent(shop) == [("ada", "hello", "queued", None), ("ken", "hello", "queued", None)]
    assert status(shop, "bob@example.com") == ("active", "consent pending confirmation")
    deliver(shop, MONDAY)
    assert at(shop, MONDAY + timedelta(days=1))["queued"] == 0
    at(shop, MONDAY + timedelta(days=2))
    tips = [row for row in sent(shop) if row[1] == "tips"]
    assert [row[0] for row in tips] == ["ada", "ken"]
    deliver(shop, MONDAY + timedelta(days=2))
    # the offer waits for each contact's own 09:00-18:00 on a weekday
    report = at(shop, MONDAY + timedelta(days=4))  # Friday 10:00 UTC: 19:00 in Tokyo
    assert report["queued"] == 1 and report["postponed"] >= 1
    assert [row[0] for row in sent(shop) if row[1] == "offer"] == ["ada"]
    at(shop, datetime(2026, 11, 30, 0, 0, tzinfo=UTC))  # Monday 09:00 JST
    assert [row[0] for row in sent(shop) if row[1] == "offer"] == ["ada", "ken"]
    assert status(shop, "ken@example.com") == ("completed", None)


def test_ticking_again_or_twice_at_once_queues_nothing_twice(shop: Workspace) -> None:
    at(shop, MONDAY)
    assert set(at(shop, MONDAY).values()) == {0}
    deliver(shop, MONDAY)
    moment = MONDAY + timedelta(days=2)
    threads = [threading.Thread(target=at, args=(shop, moment)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    steps = [(row[0], row[1]) for row in sent(shop)]
    assert len(steps) == len(set(steps)) == 4


def test_consent_withdrawn_before_the_step_is_due_means_not_queued(shop: Workspace) -> None:
    at(shop, MONDAY)
    with shop.engine.begin() as connection:
        withdraw(connection, shop.key, "ada@example.com", shop.double_opt_in,
                 MONDAY + timedelta(days=1), list_name="newsletter")  # fmt: skip
    at(shop, MONDAY + timedelta(days=2))
    assert [row for row in sent(shop) if row[0] == "ada"] == [("ada", "hello", "queued", None)]
    assert status(shop, "ada@example.com") == ("exited", "no consent (withdrawn)")


def test_the_goal_ends_the_sequence_as_converted(shop: Workspace) -> None:
    at(shop, MONDAY)
    add_event(shop, "ken@example.com", "website", "purchased", MONDAY + timedelta(hours=5))
    report = at(shop, MONDAY + timedelta(days=2))
    assert report["converted"] == 1
    assert status(shop, "ken@example.com") == ("converted", 'goal reached: event "purchased"')


def test_a_false_condition_skips_the_step(shop: Workspace) -> None:
    at(shop, MONDAY)
    deliver(shop, MONDAY)
    add_event(shop, "ada@example.com", "open", "welcome", MONDAY + timedelta(hours=1), "hello")
    at(shop, MONDAY + timedelta(days=2))
    assert ("ada", "tips", "skipped", None) in sent(shop)
    assert "offer" not in [row[1] for row in sent(shop) if row[0] == "ada"]
    at(shop, MONDAY + timedelta(days=4))  # the offer's own two days count from the skip
    assert ("ada", "offer", "queued", None) in sent(shop)


def test_a_confirmation_lets_a_pending_contact_in(shop: Workspace, tmp_path: Path) -> None:
    at(shop, MONDAY)
    run_import(shop, write_csv(tmp_path / "confirmed.csv", """
        email,consent_at,consent_confirmed_at
        bob@example.com,2026-11-23T09:00Z,2026-11-23T09:50Z
    """), "newsletter")  # fmt: skip
    at(shop, MONDAY + timedelta(hours=2))
    assert ("bob", "hello", "queued", None) in sent(shop)


def test_event_triggers_and_reentry_after_the_waiting_time(shop: Workspace) -> None:
    add_event(shop, "ada@example.com", "website", "cart_abandoned", MONDAY)
    assert at(shop, MONDAY)["enrolled"] >= 1
    at(shop, MONDAY + timedelta(hours=2))
    add_event(shop, "ada@example.com", "website", "cart_abandoned", MONDAY + timedelta(days=3))
    at(shop, MONDAY + timedelta(days=3, hours=2))  # too soon: 7 days after the last ended
    assert [row for row in sent(shop) if row[1] == "reminder"] == [
        ("ada", "reminder", "queued", None)]  # fmt: skip
    add_event(shop, "ada@example.com", "website", "cart_abandoned", MONDAY + timedelta(days=10))
    at(shop, MONDAY + timedelta(days=10))
    at(shop, MONDAY + timedelta(days=10, hours=2))
    assert len([row for row in sent(shop) if row[1] == "reminder"]) == 2


def test_variants_are_recorded_on_the_outbox_row(shop: Workspace) -> None:
    at(shop, MONDAY)
    at(shop, MONDAY + timedelta(days=2))
    variants = {row[0]: row[3] for row in sent(shop) if row[1] == "tips"}
    assert set(variants.values()) <= {None, "B"}
    with shop.engine.begin() as connection:
        for table in (outbox, enrollments, trigger_cursors):  # as if never run
            connection.execute(table.delete())
    at(shop, MONDAY)
    at(shop, MONDAY + timedelta(days=2))
    assert {row[0]: row[3] for row in sent(shop) if row[1] == "tips"} == variants


def test_the_outbox_row_records_the_consent_that_allowed_it(shop: Workspace) -> None:
    at(shop, MONDAY)
    with shop.engine.connect() as connection:
        entry = connection.scalar(select(outbox.c.consent_entry_id).where(outbox.c.step == "hello"))
    assert entry is not None


def test_a_tick_reads_only_new_members(shop: Workspace, tmp_path: Path) -> None:
    assert at(shop, MONDAY)["enrolled"] == 3
    assert at(shop, MONDAY + timedelta(hours=1))["enrolled"] == 0
    shop.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
    run_import(shop, write_csv(tmp_path / "late.csv", """
        email,consent_at,consent_confirmed_at
        zoe@example.com,2026-11-23T11:00Z,2026-11-23T11:01Z
    """), "newsletter")  # fmt: skip
    report = at(shop, MONDAY + timedelta(hours=3))
    assert report["enrolled"] == 1 and ("zoe", "hello", "queued", None) in sent(shop)


BROADCASTS = """
[segments]
everyone = 'email contains "@"'

[campaigns.launch]
kind = "broadcast"
list = "newsletter"
segment = "everyone"
template = "launch"
subject = "Our winter blend is here"
send_at = "2026-11-24T09:00 local"

[campaigns.stale]
kind = "broadcast"
list = "newsletter"
segment = "everyone"
template = "launch"
subject = "Spring sale"
send_at = "2026-03-20T09:00Z"
"""


@pytest.fixture
def launch(tmp_path: Path, environ: dict[str, str]) -> Iterator[Workspace]:
    yield from open_shop(tmp_path, environ, BROADCASTS)


def test_a_broadcast_goes_out_at_nine_in_each_contacts_zone(launch: Workspace) -> None:
    at(launch, MONDAY)
    assert [row for row in sent(launch) if row[1] == "broadcast"] == []
    at(launch, datetime(2026, 11, 24, 0, 0, tzinfo=UTC))  # 09:00 in Tokyo
    assert [row[0] for row in sent(launch) if row[1] == "broadcast"] == ["ken"]
    at(launch, datetime(2026, 11, 24, 9, 0, tzinfo=UTC))  # 09:00 in London
    at(launch, datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    # bob never confirmed his subscription: no consent, no broadcast
    assert sorted(row[0] for row in sent(launch) if row[1] == "broadcast") == ["ada", "ken"]
    with launch.engine.connect() as connection:
        campaigns = {row.campaign for row in connection.execute(select(outbox.c.campaign))}
    assert "stale" not in campaigns  # eight months late: never sent


def test_plan_shows_what_ticks_would_queue_and_writes_nothing(shop: Workspace) -> None:
    from mailer.campaigns.plan import plan

    result = plan(shop.engine, shop.settings, MONDAY, timedelta(days=7)).as_dict()
    assert sent(shop) == []  # a dry run
    queued = {(row["campaign"], row["step"]): row["total"] for row in result["queued"]}
    assert queued == {("welcome", "hello"): 2, ("welcome", "tips"): 2, ("welcome", "offer"): 2}
    assert {"campaign": "welcome", "reason": "consent pending confirmation",
            "count": 1} in result["held_back"]  # fmt: skip
    hello = next(row for row in result["queued"] if row["step"] == "hello")
    assert hello["by_hour"] == {"0": 2}
    for hour in range(0, 7 * 24 + 1):
        at(shop, MONDAY + timedelta(hours=hour))
        deliver(shop, MONDAY + timedelta(hours=hour))
    assert len([row for row in sent(shop) if row[2] == "sent"]) == 6


def test_the_frequency_cap_postpones_and_never_drops(tmp_path: Path,
                                                     environ: dict[str, str]) -> None:  # fmt: skip
    for shop in open_shop(tmp_path, environ, '[engine]\nfrequency_cap = "1 per 1d"\n'):
        add_event(shop, "ada@example.com", "website", "cart_abandoned", MONDAY)
        at(shop, MONDAY)  # welcome/hello goes out to ada
        at(shop, MONDAY + timedelta(hours=2))  # the cart reminder is due, but ada is capped
        assert status(shop, "ada@example.com", "cart") == ("active", "frequency cap (1 per 1d)")
        at(shop, MONDAY + timedelta(days=1, minutes=1))
        assert ("ada", "reminder", "queued", None) in sent(shop)


def test_a_bad_frequency_cap_is_a_settings_error(project: Path) -> None:
    from mailer.config import load_settings
    from mailer.errors import SettingsError

    path = project / "settings.toml"
    path.write_text(path.read_text() + '\n[engine]\nfrequency_cap = "lots"\n')
    with pytest.raises(SettingsError, match=r'engine\.frequency_cap: "lots" is not a'):
        load_settings(path, environ={})


def test_broadcast_variants_in_sql_match_the_python_assignment(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    from mailer.campaigns.timing import pick_variant

    extra = BROADCASTS + '\n[campaigns.launch.variants.B]\nsubject = "Winter is coming"\n'
    extra += '[campaigns.launch.variants.C]\nsubject = "Cold outside?"\nweight = 2\n'
    for shop in open_shop(tmp_path, environ, extra):
        with shop.engine.begin() as connection:  # many contacts, all consented
            for contact_id in range(1000, 1400):
                connection.execute(insert(contacts).values(
                    id=contact_id, email=f"c{contact_id}@example.com", attributes={},
                    created_at=MONDAY, updated_at=MONDAY))  # fmt: skip
        lines = "".join(f"c{i}@example.com,2026-11-01,2026-11-01\n" for i in range(1000, 1400))
        many = write_csv(tmp_path / "many.csv", "email,consent_at,consent_confirmed_at\n" + lines)
        run_import(shop, many, "newsletter")
        at(shop, datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
        weights = {"A": 1, "B": 1, "C": 2}
        with shop.engine.connect() as connection:
            rows = connection.execute(select(outbox.c.contact_id, outbox.c.variant)
                                      .where(outbox.c.campaign == "launch")).all()  # fmt: skip
        assert len(rows) >= 400
        for contact_id, variant in rows:
            expected = pick_variant(contact_id, "launch", "broadcast", weights)
            assert (variant or "A") == expected
        shares = Counter(variant or "A" for _, variant in rows)
        assert 0.4 < shares["C"] / len(rows) < 0.6


BIRTHDAYS = """
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
delay = "9h"
"""


def test_a_date_trigger_comes_every_year_in_each_contacts_own_zone(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    for shop in open_shop(tmp_path, environ, BIRTHDAYS):
        run_import(shop, write_csv(tmp_path / "bd.csv", """
            email,timezone,birthday,consent_at
            ada@example.com,Europe/London,1990-11-24,2026-11-01
            ken@example.com,Asia/Tokyo,1985-11-24,2026-11-01
            zed@example.com,Europe/London,2000-02-29,2026-11-01
            new@example.com,Europe/London,2026-11-24,2026-11-01
        """), "shop")  # fmt: skip

        def wishes(shop: Workspace = shop) -> list[str]:
            return sorted(row[0] for row in sent(shop) if row[1] == "wishes")

        at(shop, datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
        assert wishes() == []
        at(shop, datetime(2026, 11, 23, 15, 30, tzinfo=UTC))  # 00:30 on the 24th in Tokyo
        at(shop, datetime(2026, 11, 24, 0, 30, tzinfo=UTC))  # 09:30 in Tokyo, 00:30 London
        assert wishes() == ["ken"]
        at(shop, datetime(2026, 11, 24, 9, 30, tzinfo=UTC))
        assert wishes() == ["ada", "ken"]  # not "new": born today, no anniversary yet
        at(shop, datetime(2027, 2, 28, 0, 30, tzinfo=UTC))
        at(shop, datetime(2027, 2, 28, 9, 30, tzinfo=UTC))
        assert "zed" in wishes()  # 29 February, celebrated on the 28th in 2027
        at(shop, datetime(2027, 11, 24, 0, 30, tzinfo=UTC))
        at(shop, datetime(2027, 11, 24, 9, 30, tzinfo=UTC))
        assert wishes().count("ada") == 2 and wishes().count("ken") == 2


BRANCH = """
[campaigns.tour]
kind = "sequence"
list = "newsletter"
trigger = 'joins list "newsletter"'
enroll_existing = true

[[campaigns.tour.steps]]
name = "intro"
template = "t/1"
subject = "Intro"

[[campaigns.tour.steps]]
name = "pricing-follow-up"
template = "t/2"
subject = "About our prices"
delay = "1 day"
condition = 'clicked step "tour.intro"'
otherwise = "story"

[[campaigns.tour.steps]]
name = "discount"
template = "t/3"
subject = "A discount for you"
delay = "1 day"

[[campaigns.tour.steps]]
name = "story"
template = "t/4"
subject = "Our story"
delay = "1 day"
"""


def test_a_false_condition_can_branch_to_a_later_step(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    for shop in open_shop(tmp_path, environ, BRANCH):
        at(shop, MONDAY)
        deliver(shop, MONDAY)
        add_event(shop, "ada@example.com", "click", "tour", MONDAY + timedelta(hours=2), "intro")
        for day in range(1, 5):
            at(shop, MONDAY + timedelta(days=day))
            deliver(shop, MONDAY + timedelta(days=day))
        tour = [(row[0], row[1], row[2]) for row in sent(shop)
                if row[1] in ("intro", "pricing-follow-up", "discount", "story")]  # fmt: skip
        ada = [(step, state) for who_, step, state in tour if who_ == "ada"]
        ken = [(step, state) for who_, step, state in tour if who_ == "ken"]
        assert ada == [("intro", "sent"), ("pricing-follow-up", "sent"),
                       ("discount", "sent"), ("story", "sent")]  # fmt: skip
        assert ken == [("intro", "sent"), ("pricing-follow-up", "skipped"),
                       ("story", "sent")]  # fmt: skip


def test_a_branch_must_go_forward(project: Path) -> None:
    from mailer.config import load_settings
    from mailer.errors import SettingsError

    path = project / "settings.toml"
    branch = 'delay = "2 days"\ncondition = "opened previous"\notherwise = "hello"'
    path.write_text(path.read_text().replace('delay = "2 days"', branch))
    with pytest.raises(SettingsError, match="'hello' is not a later step"):
        load_settings(path, environ={})


def test_quiet_hours_hold_messages_until_each_contacts_morning(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    for shop in open_shop(tmp_path, environ, '[engine]\nquiet_hours = "21:00-08:00"\n'):
        report = at(shop, datetime(2026, 11, 23, 21, 30, tzinfo=UTC))  # London 21:30, Tokyo 06:30
        assert report["queued"] == 0 and report["postponed"] == 3  # bob: not confirmed
        assert status(shop, "ada@example.com") == (
            "active",
            "quiet hours 21:00-08:00 (Europe/London)",
        )
        at(shop, datetime(2026, 11, 23, 23, 30, tzinfo=UTC))  # Tokyo 08:30
        assert [row[0] for row in sent(shop)] == ["ken"]
        at(shop, datetime(2026, 11, 24, 8, 30, tzinfo=UTC))  # London 08:30
        assert sorted(row[0] for row in sent(shop)) == ["ada", "ken"]


def test_quiet_hours_from_midnight_hold_messages_until_six(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    for shop in open_shop(tmp_path, environ, '[engine]\nquiet_hours = "00:00-06:00"\n'):
        at(shop, datetime(2026, 11, 24, 1, 30, tzinfo=UTC))  # London 01:30, Tokyo 10:30
        assert [row[0] for row in sent(shop)] == ["ken"]
        assert status(shop, "ada@example.com") == (
            "active",
            "quiet hours 00:00-06:00 (Europe/London)",
        )
        at(shop, datetime(2026, 11, 24, 6, 0, tzinfo=UTC))  # London 06:00
        assert sorted(row[0] for row in sent(shop)) == ["ada", "ken"]


def test_a_new_sequence_does_not_welcome_a_list_imported_before_it(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    later = ENGINE_SETTINGS.replace("enroll_existing = true\n", "")
    root = tmp_path / "late"
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(later))
    shop = Workspace(load_settings(root / "settings.toml", environ=environ), FrozenClock(MONDAY))
    run_import(shop, write_csv(tmp_path / "old.csv", """
        email,consent_at,consent_confirmed_at
        ada@example.com,2025-01-01,2025-01-01
    """), "newsletter")  # fmt: skip
    assert at(shop, MONDAY)["enrolled"] == 0  # the sequence starts now; ada joined before
    shop.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    run_import(shop, write_csv(tmp_path / "new.csv", """
        email,consent_at,consent_confirmed_at
        zoe@example.com,2026-11-23T10:30Z,2026-11-23T10:31Z
    """), "newsletter")  # fmt: skip
    assert at(shop, MONDAY + timedelta(hours=2))["enrolled"] == 1  # zoe joined after: welcome
    assert [row[0] for row in sent(shop)] == ["zoe"]
    shop.close()


def test_a_tick_on_an_empty_database_does_nothing(tmp_path: Path, environ: dict[str, str]) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(ENGINE_SETTINGS + BIRTHDAYS + BROADCASTS))
    shop = Workspace(load_settings(root / "settings.toml", environ=environ), FrozenClock(MONDAY))
    assert set(at(shop, MONDAY).values()) == {0}
    shop.close()


# One campaign's or one contact's failure is its own: the rest of the tick commits.

BROKEN = """
[segments]
big = 'tier > 3'  # tier is not declared a number: compiling this raises

[campaigns.survey]
kind = "sequence"
list = "newsletter"
trigger = 'joins list "newsletter"'
enroll_existing = true

[[campaigns.survey.steps]]
name = "ask"
template = "survey/1"
subject = "How was it?"
condition = 'plan > 3'  # nor is plan

[campaigns.vip]
kind = "sequence"
list = "newsletter"
trigger = 'enters segment "big"'
enroll_existing = true

[[campaigns.vip.steps]]
name = "hi"
template = "vip/1"
subject = "Hi"
"""


def test_a_campaign_whose_condition_fails_does_not_stop_the_others(
    tmp_path: Path, environ: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    for shop in open_shop(tmp_path, environ, BROKEN):
        report = at(shop, MONDAY)
        assert sent(shop) == [("ada", "hello", "queued", None), ("ken", "hello", "queued", None)]
        assert report["errors"] == 2  # ada's and ken's survey (bob waits for his confirmation)
        state, reason = status(shop, "ada@example.com", "survey")
        assert state == "active" and reason is not None
        assert reason.startswith("failed: 'plan > 3': plan is text: ")
        assert reason.endswith("declare it in [attributes] (plan = \"integer\") to compare "
                               "numbers (tried again every 10 minutes)")  # fmt: skip
        with shop.engine.connect() as connection:
            due = connection.scalar(select(enrollments.c.due_at).where(
                enrollments.c.campaign == "survey", enrollments.c.reason == reason))  # fmt: skip
        assert due is not None and due.replace(tzinfo=UTC) == MONDAY + timedelta(minutes=10)
        failures = [r for r in caplog.records if r.getMessage().startswith("campaign failed")]
        assert {getattr(r, "campaign", None) for r in failures} == {"survey", "vip"}
        assert at(shop, MONDAY + timedelta(minutes=10))["errors"] == 2  # tried again, logged


def test_the_failing_runs_are_listed_with_their_error(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    def mailer(*args: str) -> str:
        command = ["--config", str(tmp_path / "shop" / "settings.toml"), "campaign", "failing"]
        result = CliRunner().invoke(cli, [*command, *args], env=environ)
        assert result.exit_code == 0, result.output
        return result.output

    for shop in open_shop(tmp_path, environ, BROKEN):
        assert "no failing runs" in mailer()
        at(shop, MONDAY)
        found = json.loads(mailer("--json"))
        assert found["failing"] == 2
        retry = (MONDAY + timedelta(minutes=10)).isoformat()
        assert [(run["campaign"], run["email"], run["last_step"], run["failing_since"],
                 run["next_try"]) for run in found["runs"]] == [
            ("survey", email, None, MONDAY.isoformat(), retry)
            for email in ("ada@example.com", "ken@example.com")
        ]  # fmt: skip
        assert all(run["reason"].startswith("failed: 'plan > 3': plan is text: ")
                   for run in found["runs"])  # fmt: skip
        lines = mailer("survey", "--limit", "1").splitlines()
        assert lines[0] == ("survey  ada@example.com  (first step; failing since 2026-11-23 "
                            "10:00 UTC, next try 2026-11-23 10:10 UTC)")  # fmt: skip
        assert lines[1].startswith("  failed: 'plan > 3': plan is text: ")
        assert lines[2:] == ["2 failing runs in all; --limit 2 shows every one"]
        assert json.loads(mailer("welcome", "--json")) == {"failing": 0, "runs": []}
        unknown = CliRunner().invoke(cli, ["--config", str(shop.settings.source), "campaign",
                                           "failing", "nope"], env=environ)  # fmt: skip
        assert unknown.exit_code == 1 and "no campaign 'nope'" in unknown.output


def test_a_contact_whose_step_fails_does_not_stop_the_others(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    for shop in open_shop(tmp_path, environ, '[engine]\nquiet_hours = "21:00-08:00"\n'):
        with shop.engine.begin() as connection:  # a zone no database of zones knows
            connection.execute(contacts.update().where(contacts.c.email == "ken@example.com")
                               .values(timezone="Mars/Olympus"))  # fmt: skip
        report = at(shop, MONDAY)
        assert report["queued"] == 1 and report["errors"] == 1
        assert sent(shop) == [("ada", "hello", "queued", None)]
        state, reason = status(shop, "ken@example.com")
        assert state == "active" and reason is not None and "Mars/Olympus" in reason
