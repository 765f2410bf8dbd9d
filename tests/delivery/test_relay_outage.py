"""After an outage of every relay: when one comes back (its probe, or any message, gets an
answer), the messages deferred because no relay took them are due at once, not after each
one's backoff; a message deferred for its recipient's own 4xx (greylisting) keeps its backoff.
Real aiosmtpd relays that are down (not listening) then up on the same port, real SQLite and
PostgreSQL, the clock injected."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import deliver, rows
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.delivery.test_relays import downs, operator_view, queue_more, with_fallback

Opener = Callable[..., Workspace]


def test_when_the_relay_is_back_the_messages_it_could_not_take_are_due_at_once_not_greylisted(
    open_workspace: Opener, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    relay = ScriptedSmtpServer()
    relay.start()
    workspace = open_workspace(SMTP__PORT=str(relay.port), SMTP__POOL_SIZE="1")
    relay.script("gil@example.com", "451 4.7.1 Greylisted, try again later")
    queue_more(workspace, project, "gil@example.com")
    assert deliver(workspace).deferred == 1
    relay.stop()  # the relay goes away
    queue_more(workspace, project, "ada@example.com", "bob@example.com")
    assert deliver(workspace, timedelta(seconds=1)).deferred == 2
    assert set(downs(workspace)) == {"primary"}
    before = rows(workspace)
    assert before["gil@example.com"]["reason"] == "temporary failure at rcpt"
    for person in ("ada@example.com", "bob@example.com"):
        assert before[person]["reason"] == "no relay takes mail (at connect)"
        assert before[person]["send_after"] > NOW + timedelta(minutes=2)  # their backoff
    greylisted = before["gil@example.com"]["send_after"]
    assert greylisted > NOW + timedelta(minutes=2)

    back = ScriptedSmtpServer(port=relay.port)  # the relay is back on its port
    back.start()
    try:
        queue_more(workspace, project, "dan@example.com")  # due now: it probes the relay
        with caplog.at_level(logging.INFO, logger="mailer"):
            assert deliver(workspace, timedelta(seconds=40)).sent == 1
        assert ("relay primary is up again (down since 2026-11-23 10:00:01); 2 messages "
                "deferred while no relay took mail are due now") in caplog.text  # fmt: skip
        after = rows(workspace)
        assert after["ada@example.com"]["send_after"] == NOW + timedelta(seconds=40)
        assert after["bob@example.com"]["send_after"] == NOW + timedelta(seconds=40)
        assert after["gil@example.com"]["send_after"] == greylisted

        assert deliver(workspace, timedelta(seconds=41)).sent == 2  # the next claim
        assert [m.recipient for m in back.received] == ["dan@example.com", "ada@example.com",
                                                        "bob@example.com"]  # fmt: skip
        gil = rows(workspace)["gil@example.com"]
        assert (gil["status"], gil["send_after"]) == ("deferred", greylisted)
        assert downs(workspace) == {}
    finally:
        back.stop()


def test_when_one_of_several_relays_down_is_back_the_deferred_go_through_it_at_once(
    open_workspace: Opener, project: Path
) -> None:
    primary, backup = ScriptedSmtpServer(), ScriptedSmtpServer()  # neither started
    workspace = with_fallback(open_workspace, primary, backup)
    queue_more(workspace, project, "ada@example.com")
    assert deliver(workspace).deferred == 1
    assert set(downs(workspace)) == {"primary", "backup"}
    assert rows(workspace)["ada@example.com"]["reason"] == "no relay takes mail (at connect)"
    health, _gauges = operator_view(workspace)
    instead = "; no relay takes mail: messages wait for their retry, or go as soon as a relay "
    assert all(f"{instead}answers again; " in reason["message"] for reason in health["reasons"])

    back = ScriptedSmtpServer(port=primary.port)
    back.start()
    try:
        queue_more(workspace, project, "bob@example.com")  # probes the primary, which answers
        assert deliver(workspace, timedelta(seconds=31)).sent == 1
        assert set(downs(workspace)) == {"backup"}
        assert deliver(workspace, timedelta(seconds=32)).sent == 1
        assert [m.recipient for m in back.received] == ["bob@example.com", "ada@example.com"]
        assert rows(workspace)["ada@example.com"]["relay"] == "primary"
    finally:
        back.stop()
