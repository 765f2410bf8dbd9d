"""`mailer campaign pause` while a run is sending that campaign: what the run claimed already
goes back to the outbox, not out; only the message a relay session holds is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailer.delivery import worker
from mailer.delivery.pauses import pause, resume
from mailer.delivery.worker import Deliverer
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer

Opener = Callable[..., Workspace]
PEOPLE = [f"p{number}@example.com" for number in range(12)]


def test_a_campaign_paused_midway_sends_no_more_of_what_the_run_claimed(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(worker, "PAUSES_READ_EVERY", 0.02)
    # One session: nothing else is in flight while the first message is held at DATA.
    workspace = open_workspace(SMTP__POOL_SIZE="1")
    queue_welcome(workspace, project, *(f"{address},P" for address in PEOPLE))
    deliverer = Deliverer(workspace)
    answer_data = smtp_server.handle_DATA

    async def pause_at_first_message(*args: Any) -> str:
        """The operator pauses welcome while the first message is being sent; the relay
        answers once the run has read the pause."""
        if not smtp_server.received:
            with workspace.engine.begin() as connection:
                pause(connection, workspace.settings, "welcome", "by the operator", NOW)
            for _ in range(1000):  # bounded: 10 s
                if "welcome" in deliverer.paused:
                    break
                await asyncio.sleep(0.01)
        return await answer_data(*args)

    smtp_server.handle_DATA = pause_at_first_message  # type: ignore[method-assign]
    try:
        report = deliverer.deliver(NOW)
        assert (report.sent, report.failed, report.deferred) == (1, 0, 0)
        assert len(smtp_server.received) == 1
        statuses = [row["status"] for row in rows(workspace).values()]
        assert sorted(statuses) == ["queued"] * 11 + ["sent"]
        held = [row for row in rows(workspace).values() if row["status"] == "queued"]
        assert {row["attempts"] for row in held} == {0}  # given back: no attempt counted
        assert deliverer.deliver(NOW).sent == 0  # paused: nothing claimed

        with workspace.engine.begin() as connection:
            assert resume(connection, workspace.settings, "welcome")
        assert deliverer.deliver(NOW).sent == 11
        assert sorted(message.recipient for message in smtp_server.received) == sorted(PEOPLE)
    finally:
        deliverer.close()
