"""A single relay failing, as /healthz reports it in every process: `mailer run` counts its own
sessions' failures in a row (delivery/relay_watch.py), but `mailer serve` (which sends
nothing) and a second `mailer run` read the relay's down state from the table relays_down.
Once that state has lasted FAILING_AFTER failed attempts (the one that took the relay down and
each probe since, by any process), every process reports relay_failing; one working reply
clears it for all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.delivery.relay_watch import FAILING_AFTER, RelayStanding, recorded_down
from mailer.delivery.relays import Down
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.crash.conftest import wait_for
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.delivery.test_relays import downs
from tests.tracking.conftest import free_port

Opener = Callable[..., Workspace]
SINCE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def down(failures: int) -> Down:
    return Down(SINCE, SINCE + timedelta(minutes=5), failures, "SMTPConnectError (at connect)")


def test_the_process_own_streak_stands_while_no_process_recorded_the_relay_down() -> None:
    own = RelayStanding(1, "421 busy (at rcpt)")
    assert recorded_down(own, None) == own
    assert recorded_down(None, None) is None


def test_a_relay_recorded_down_for_fewer_attempts_than_failing_after_is_a_blip() -> None:
    assert recorded_down(None, down(FAILING_AFTER - 1)) is None
    assert recorded_down(RelayStanding(), down(FAILING_AFTER - 1)) == RelayStanding()


def test_a_relay_recorded_down_for_failing_after_attempts_is_failing_in_every_process() -> None:
    shared = recorded_down(RelayStanding(), down(FAILING_AFTER))
    assert shared == RelayStanding(FAILING_AFTER, "SMTPConnectError (at connect)", SINCE)
    assert shared.failing
    own = RelayStanding(4, "554 5.7.1 blocked (at rcpt)")  # this process saw it itself
    assert recorded_down(own, down(FAILING_AFTER)) == own


@pytest.fixture
def relay() -> ScriptedSmtpServer:
    """A relay not started: its port refuses connections until the test starts it."""
    return ScriptedSmtpServer()


@pytest.fixture
def serve(project: Path, environ: dict[str, str],
          relay: ScriptedSmtpServer) -> Iterator[Callable[[], dict[str, Any]]]:  # fmt: skip
    """`mailer serve` with that relay in its settings, in a process of its own, which never
    tries the relay; its /healthz."""
    port = free_port()
    log = project / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "mailer", "serve"], cwd=project,
            env={**os.environ, **environ, "MAILER_TRACKING__PORT": str(port),
                 "MAILER_SMTP__PORT": str(relay.port), "MAILER_NOW": NOW.isoformat()},
            stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def healthz() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{base}/healthz").json()
        return answer

    def listening() -> bool:
        assert server.poll() is None, log.read_text()
        try:
            httpx.get(f"{base}/healthz")
        except httpx.TransportError:
            return False
        return True

    try:
        wait_for(listening, 60, "mailer serve listens")
        yield healthz
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_mailer_serve_reports_a_single_relay_failing_that_another_process_found_down(
    open_workspace: Opener,
    project: Path,
    relay: ScriptedSmtpServer,
    serve: Callable[[], dict[str, Any]],
) -> None:
    workspace = open_workspace(SMTP__PORT=str(relay.port), SMTP__POOL_SIZE="1")
    assert serve() == {"status": "ok", "reasons": [], "relay": "not used yet", "buffered": 0}

    after = timedelta(0)
    for number, wait in enumerate([0, 30, 60], start=1):  # the failure, then two probes
        after += timedelta(seconds=wait)
        queue_welcome(workspace, project, f"p{number}@example.com,P")
        assert deliver(workspace, after).deferred >= 1
        assert downs(workspace)["primary"].failures == number
        if number < FAILING_AFTER:  # a blip, or two: not yet failing
            assert serve()["status"] == "ok"

    health = serve()
    assert (health["status"], health["relay"]) == ("degraded", "failing")
    [failing] = health["reasons"]
    assert failing["check"] == "relay_failing"
    assert failing["message"].startswith(
        f"the relay is down since 2026-11-23 10:00:00 UTC: {FAILING_AFTER} attempts failed "
        "(the first and each probe since, by any process); last: SMTPConnectError"
    )

    relay.start()  # back: the next probe clears the relay's down state for every process
    try:
        queue_welcome(workspace, project, "back@example.com,B")
        assert deliver(workspace, after + timedelta(minutes=5)).sent >= 1
    finally:
        relay.stop()
    assert downs(workspace) == {}
    assert serve() == {"status": "ok", "reasons": [], "relay": "not used yet", "buffered": 0}
