"""The verdict of /healthz as a pure function: the relay's standing, paused campaigns and the
event writer's backlog in, the reasons out."""

from __future__ import annotations

from datetime import timedelta

from mailer.delivery.relay_watch import RelayStanding
from mailer.tracking.health import EventBacklog, health_body, reasons, writer_behind
from tests.conftest import NOW

KEEPING_UP = EventBacklog(3, 10_000, NOW - timedelta(seconds=1), timedelta(seconds=1), None)
FAILING = RelayStanding(3, "554 5.7.1 Client host blocked (at rcpt)")


def test_all_well_is_ok_with_no_reasons() -> None:
    found = reasons(RelayStanding(), {}, KEEPING_UP, NOW)
    assert found == []
    assert health_body(found, KEEPING_UP, RelayStanding()) == {
        "status": "ok",
        "reasons": [],
        "relay": "ok",
        "buffered": 3,
    }


def test_a_failing_relay_and_a_paused_campaign_are_each_a_reason() -> None:
    found = reasons(FAILING, {"welcome": "the relay refused 25 messages in a row"}, KEEPING_UP, NOW)
    body = health_body(found, KEEPING_UP, FAILING)
    assert body["status"] == "degraded" and body["relay"] == "failing"
    relay, paused = body["reasons"]
    assert relay["check"] == "relay_failing" and "5.7.1" in relay["message"]
    assert paused["check"] == "campaign_paused" and paused["campaign"] == "welcome"
    assert "refused 25 messages" in paused["message"]
    assert "mailer campaign resume welcome" in paused["message"]


def test_two_relay_failures_are_a_blip_and_an_unused_relay_is_no_reason() -> None:
    assert reasons(RelayStanding(2, "no answer"), {}, KEEPING_UP, NOW) == []
    assert reasons(None, {}, KEEPING_UP, NOW) == []
    assert health_body([], KEEPING_UP, None)["relay"] == "not used yet"


def test_the_event_writer_is_behind_when_its_last_write_failed() -> None:
    failed = EventBacklog(40, 10_000, NOW, timedelta(seconds=1), "OperationalError: locked")
    reason = writer_behind(failed, NOW)
    assert reason is not None and "OperationalError: locked" in reason and "40 " in reason


def test_the_event_writer_is_behind_at_its_high_water_mark() -> None:
    full = EventBacklog(10_000, 10_000, NOW, timedelta(seconds=1), None)
    assert writer_behind(full, NOW) is not None
    assert writer_behind(EventBacklog(9_999, 10_000, NOW, timedelta(seconds=1), None), NOW) is None


def test_the_event_writer_is_behind_when_the_oldest_hit_waited_ten_flushes() -> None:
    every = timedelta(seconds=2)
    waiting = EventBacklog(5, 10_000, NOW, every, None)
    assert writer_behind(waiting, NOW + 10 * every) is None
    late = writer_behind(waiting, NOW + 10 * every + timedelta(seconds=1))
    assert late is not None and "for 21 s" in late
    found = reasons(None, {}, waiting, NOW + timedelta(minutes=5))
    assert [reason.check for reason in found] == ["event_writer_behind"]
