"""A `local` broadcast goes out zone by zone: each zone at its own time, found late on its own,
queued once (who joins after their zone went is left out), and never a mix of two versions:
an edit after the first zones went holds the rest until the settings are restored. Through the
real engine with the injected clock, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.campaigns.broadcast_state import broadcast_state
from mailer.check import check_project
from mailer.config import load_settings
from mailer.delivery.pauses import paused_campaigns
from mailer.store.tables import outbox
from tests.campaigns.test_broadcasts import Shop, open_launch
from tests.conftest import write_csv
from tests.helpers import run_import

SEND_AT = "2026-11-24T09:00 local"
TOKYO_NINE = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
LONDON_NINE = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
NEW_YORK_NINE = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


@pytest.fixture
def vip(tmp_path: Path, environ: dict[str, str]) -> Iterator[Shop]:
    """`launch` at 09:00 local to the VIP list (no double opt-in), empty until a test fills it."""
    yield from open_launch(tmp_path, environ, "vip", SEND_AT)


def join(shop: Shop, tmp_path: Path, *people: tuple[str, str]) -> None:
    """(name, zone) join the VIP list, with consent."""
    rows = "".join(f"{name}@example.com,{zone},2026-11-20T09:00Z\n" for name, zone in people)
    path = write_csv(tmp_path / f"join-{people[0][0]}.csv", "email,timezone,consent_at\n" + rows)
    run_import(shop.workspace, path, "vip")


def edit(shop: Shop, before: str, after: str) -> None:
    settings = shop.path.read_text()
    assert before in settings
    shop.path.write_text(settings.replace(before, after))


def paused(shop: Shop) -> dict[str, str]:
    with shop.workspace.engine.connect() as connection:
        return paused_campaigns(connection)


def deliver_all(shop: Shop) -> None:
    with shop.workspace.engine.begin() as connection:
        connection.execute(outbox.update().values(status="sent"))


def test_each_zone_is_late_on_its_own_so_honolulu_gets_it_when_kiritimati_is_stale(
    vip: Shop, tmp_path: Path
) -> None:
    join(vip, tmp_path, ("kai", "Pacific/Kiritimati"), ("hana", "Pacific/Honolulu"))
    # 09:00 in Kiritimati (+14) was 2026-11-23 19:00 UTC, in Honolulu (-10) 2026-11-24 19:00
    first_tick = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    vip.tick(first_tick)
    assert vip.launched() == [("hana", 0)]
    deliver_all(vip)
    assert vip.states(first_tick)["launch"] == {
        "state": "sent",
        "why": "sent to 1 zone: 1 messages queued by 2026-11-25 01:00 UTC, all delivered or "
        "settled; 1 zone stale (Pacific/Kiritimati: first due tick 30h late)",
    }


def test_who_joins_after_their_zone_went_is_left_out_and_a_new_zone_gets_it_at_its_time(
    vip: Shop, tmp_path: Path
) -> None:
    join(vip, tmp_path, ("ada", "Europe/London"), ("ken", "Asia/Tokyo"))
    vip.tick(TOKYO_NINE)
    assert vip.launched() == [("ken", 0)]
    an_hour_later = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    # yui's zone went an hour ago; Sydney's 09:00 passed (22:00 UTC) with nobody in it;
    # New York's 09:00 is still ahead
    join(vip, tmp_path, ("yui", "Asia/Tokyo"), ("lou", "Australia/Sydney"),
         ("sam", "America/New_York"))  # fmt: skip
    for moment in (an_hour_later, LONDON_NINE, NEW_YORK_NINE,
                   datetime(2026, 11, 24, 23, 0, tzinfo=UTC)):  # fmt: skip
        vip.tick(moment)
    assert vip.launched() == [("ada", 0), ("ken", 0), ("sam", 0)]


@pytest.mark.parametrize(("before", "after", "edited"), [
    ('subject = "Our winter blend is here"', 'subject = "Last days of winter"', "subject"),
    ("""everyone = 'email contains "@"'""", """everyone = 'email contains "a"'""", "segment"),
])  # fmt: skip
def test_an_edit_after_the_first_zones_went_holds_the_rest_until_it_is_restored(
    vip: Shop, tmp_path: Path, environ: dict[str, str], before: str, after: str, edited: str
) -> None:
    join(vip, tmp_path, ("ada", "Europe/London"), ("ken", "Asia/Tokyo"))
    vip.tick(TOKYO_NINE)
    edit(vip, before, after)
    vip.tick(LONDON_NINE)
    assert vip.launched() == [("ken", 0)]  # ada's zone waits: never a second version
    held = vip.states(LONDON_NINE)["launch"]
    assert held == {"state": "held", "why": f"{edited} edited after sending began (1 zone "
                    "queued, 1 waiting): restore the settings, or copy the broadcast under a "
                    "new name"}  # fmt: skip
    settings = load_settings(vip.path, environ=environ)
    found = [problem.message for problem in check_project(settings, LONDON_NINE).errors
             if "sending began" in problem.message]  # fmt: skip
    assert found == [f"{vip.path}: campaigns.launch: {held['why']}"]
    assert paused(vip) == {"launch": f"held: {held['why']}"}  # ken's would show the edit
    edit(vip, after, before)
    vip.tick(datetime(2026, 11, 24, 9, 30, tzinfo=UTC))
    assert vip.launched() == [("ada", 0), ("ken", 0)]
    assert paused(vip) == {}
    with vip.workspace.engine.connect() as connection:
        assert connection.scalar(select(outbox.c.id).where(outbox.c.status != "queued")) is None


def test_a_send_at_changed_while_sending_starts_no_second_run_until_it_is_restored(
    vip: Shop, tmp_path: Path
) -> None:
    join(vip, tmp_path, ("ada", "Europe/London"), ("ken", "Asia/Tokyo"))
    vip.tick(TOKYO_NINE)
    vip.send_at("2026-11-24T10:00 local")
    for moment in (datetime(2026, 11, 24, 1, 0, tzinfo=UTC),  # 10:00 in Tokyo
                   datetime(2026, 11, 24, 10, 0, tzinfo=UTC)):  # 10:00 in London  # fmt: skip
        vip.tick(moment)
    assert vip.launched() == [("ken", 0)]  # ken is not sent a second run
    held = vip.states(LONDON_NINE)["launch"]
    assert held is not None and held["state"] == "held"
    assert held["why"].startswith(f"send_at changed while the run of {SEND_AT} was sending")
    vip.send_at(SEND_AT)
    vip.tick(datetime(2026, 11, 24, 10, 30, tzinfo=UTC))
    assert vip.launched() == [("ada", 0), ("ken", 0)]


def test_a_finished_run_lets_a_new_send_at_go_out_to_everyone_again(
    vip: Shop, tmp_path: Path
) -> None:
    join(vip, tmp_path, ("ada", "Europe/London"), ("ken", "Asia/Tokyo"))
    for moment in (TOKYO_NINE, LONDON_NINE, datetime(2026, 11, 25, 0, 0, tzinfo=UTC)):
        vip.tick(moment)
    vip.send_at("2026-12-01T09:00 local")
    vip.tick(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    assert vip.launched() == [("ada", 0), ("ken", 0), ("ada", 1), ("ken", 1)]


# The decision itself, without I/O.


def test_a_stale_absolute_broadcast_still_says_when_its_first_tick_came() -> None:
    from mailer.campaigns.broadcast_state import BroadcastRun, ZoneDecision

    found = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    run = BroadcastRun(0, "stale", found, found, found)
    stale = ZoneDecision("*", "stale", found, 0)
    state = broadcast_state("2026-11-24T09:00Z", "news", ["UTC"], run, [stale], {}, None, found)
    assert (state.state, state.why) == (
        "stale", "never sent: first due tick at 2026-11-26 10:00 UTC was more than 1 day after "
        "2026-11-24T09:00Z")  # fmt: skip
