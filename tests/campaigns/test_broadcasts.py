"""A broadcast's done-state is keyed by what was sent (its name and send_at): an empty list, a
corrected send_at or a reused name never leaves a broadcast unsent, and one (name, send_at)
never goes out twice. Through the real engine with the injected clock, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.campaigns.broadcast_state import BroadcastRun, ZoneDecision, broadcast_state
from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.config import load_settings
from mailer.store.tables import contacts, outbox
from mailer.workspace import Workspace
from tests.campaigns.test_engine import MONDAY, open_shop
from tests.conftest import write_csv
from tests.helpers import run_import

TUESDAY_NINE = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
NEXT_TUESDAY_NINE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

LAUNCH = """
[segments]
everyone = 'email contains "@"'

[lists.vip]
title = "VIP"

[campaigns.launch]
kind = "broadcast"
list = "{list}"
segment = "everyone"
template = "launch"
subject = "Our winter blend is here"
send_at = "{send_at}"
"""


class Shop:
    """The engine test shop with one broadcast, `launch`, whose settings a test can edit."""

    def __init__(self, workspace: Workspace, environ: dict[str, str]) -> None:
        self.workspace, self.environ = workspace, environ
        self.path = workspace.settings.source

    def send_at(self, text: str) -> None:
        settings = self.path.read_text()
        before = settings.split('send_at = "')[1].split('"')[0]
        self.path.write_text(settings.replace(f'send_at = "{before}"', f'send_at = "{text}"'))

    def tick(self, moment: datetime) -> None:
        tick(self.workspace.engine, load_settings(self.path, environ=self.environ), moment)

    def launched(self) -> list[tuple[str, int]]:
        with self.workspace.engine.connect() as connection:
            rows = connection.execute(
                select(contacts.c.email, outbox.c.cycle)
                .join(contacts, contacts.c.id == outbox.c.contact_id)
                .where(outbox.c.campaign == "launch").order_by(outbox.c.cycle, contacts.c.email)
            )  # fmt: skip
            return [(row.email.split("@")[0], row.cycle) for row in rows]

    def states(self, moment: datetime) -> dict[str, dict[str, str] | None]:
        environment = {**self.environ, "MAILER_NOW": moment.isoformat()}
        result = CliRunner().invoke(cli, ["--config", str(self.path), "campaign", "list",
                                          "--json"], env=environment)  # fmt: skip
        assert result.exit_code == 0, result.output
        return {state["campaign"]: state["broadcast"] for state in json.loads(result.stdout)}


def open_launch(tmp_path: Path, environ: dict[str, str], list_name: str,
                send_at: str) -> Iterator[Shop]:  # fmt: skip
    extra = LAUNCH.format(list=list_name, send_at=send_at)
    for workspace in open_shop(tmp_path, environ, extra):
        yield Shop(workspace, environ)


@pytest.fixture
def empty_list(tmp_path: Path, environ: dict[str, str]) -> Iterator[Shop]:
    yield from open_launch(tmp_path, environ, "vip", "2026-11-24T09:00 local")


@pytest.fixture
def newsletter(tmp_path: Path, environ: dict[str, str]) -> Iterator[Shop]:
    yield from open_launch(tmp_path, environ, "newsletter", "2026-11-24T09:00Z")


def test_a_local_broadcast_whose_list_is_empty_at_a_tick_still_goes_out_at_its_time(
    empty_list: Shop, tmp_path: Path
) -> None:
    empty_list.tick(MONDAY)  # the list has no members yet
    assert empty_list.states(MONDAY)["launch"] == {
        "state": "scheduled",
        "why": "waits for members: list 'vip' is empty (send_at 2026-11-24T09:00 local)",
    }
    run_import(empty_list.workspace, write_csv(tmp_path / "vip.csv", """
        email,timezone,consent_at
        ada@example.com,Europe/London,2026-11-23T09:00Z
    """), "vip")  # fmt: skip
    empty_list.tick(TUESDAY_NINE)  # 09:00 in London
    assert empty_list.launched() == [("ada", 0)]


def test_a_send_at_in_the_past_then_corrected_goes_out(newsletter: Shop) -> None:
    newsletter.send_at("2025-11-24T09:00Z")  # a year off: stale, never sent
    newsletter.tick(MONDAY)
    assert newsletter.launched() == []
    stale = newsletter.states(MONDAY)["launch"]
    assert stale is not None and stale["state"] == "stale"
    assert stale["why"].startswith("never sent: first due tick at 2026-11-23 10:00 UTC")
    newsletter.send_at("2026-11-24T09:00Z")
    assert newsletter.states(MONDAY)["launch"] == {
        "state": "scheduled", "why": "goes out at 2026-11-24 09:00 UTC"}  # fmt: skip
    newsletter.tick(TUESDAY_NINE)
    assert newsletter.launched() == [("ada", 1), ("ken", 1)]  # bob never confirmed


def test_a_reused_name_with_a_new_send_at_goes_out_again(newsletter: Shop) -> None:
    newsletter.tick(TUESDAY_NINE)
    assert newsletter.launched() == [("ada", 0), ("ken", 0)]
    assert newsletter.states(TUESDAY_NINE)["launch"] == {
        "state": "sending", "why": "2 of 2 messages still to deliver"}  # fmt: skip
    newsletter.send_at("2026-12-01T09:00Z")
    newsletter.tick(NEXT_TUESDAY_NINE)
    assert newsletter.launched() == [("ada", 0), ("ken", 0), ("ada", 1), ("ken", 1)]


def test_a_broadcast_never_goes_out_twice_for_the_same_name_and_send_at(
    newsletter: Shop,
) -> None:
    newsletter.tick(TUESDAY_NINE)
    newsletter.tick(TUESDAY_NINE)
    newsletter.send_at("2026-11-24T09:00+00:00")  # the same time, written another way
    newsletter.tick(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    newsletter.send_at("2026-12-01T09:00Z")
    newsletter.tick(NEXT_TUESDAY_NINE)
    newsletter.send_at("2026-11-24T09:00Z")  # back to the first run: done already
    newsletter.tick(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    assert newsletter.launched() == [("ada", 0), ("ken", 0), ("ada", 1), ("ken", 1)]


def test_campaign_list_says_a_broadcast_is_sent_once_every_message_is_settled(
    newsletter: Shop,
) -> None:
    newsletter.tick(TUESDAY_NINE)
    with newsletter.workspace.engine.begin() as connection:
        connection.execute(outbox.update().values(status="sent"))
    assert newsletter.states(TUESDAY_NINE)["launch"] == {
        "state": "sent",
        "why": "2 messages queued by 2026-11-24 09:00 UTC, all delivered or settled",
    }
    assert newsletter.states(TUESDAY_NINE)["welcome"] is None  # a sequence has no such state


# The decision itself, without I/O.

START = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)


def test_a_local_broadcast_half_way_through_its_zones_is_sending() -> None:
    run = BroadcastRun(0, "sending", START, None, START)
    tokyo = ZoneDecision("Asia/Tokyo", "queued", START, 1)
    state = broadcast_state("2026-11-24T09:00 local", "news", ["Asia/Tokyo", "Europe/London"],
                            run, [tokyo], {"queued": 1}, None, START)  # fmt: skip
    assert (state.state, state.why) == (
        "sending", "1 messages queued in 1 zone so far; the last zone at 2026-11-24 09:00 UTC")


def test_a_local_broadcast_before_its_first_zone_names_its_first_and_last_zone() -> None:
    state = broadcast_state("2026-11-24T09:00 local", "news", ["Asia/Tokyo", "Europe/London"],
                            None, [], {}, None, MONDAY)  # fmt: skip
    assert (state.state, state.why) == (
        "scheduled",
        "goes out at 2026-11-24 00:00 UTC, the last zone at 2026-11-24 09:00 UTC",
    )


def test_an_empty_list_past_its_time_is_stale_and_says_why() -> None:
    state = broadcast_state("2026-03-20T09:00 local", "news", [], None, [], {}, None, MONDAY)
    assert (state.state, state.why) == (
        "stale",
        "never sent: list 'news' had no members by 2026-03-20T09:00 local",
    )
