"""`mailer consent export` is everything held about the person (GDPR Art. 15 and 20)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

import httpx

from mailer.consent.person import export_person, withdraw
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.tracking.conftest import at

Serve = Callable[..., AbstractContextManager[str]]
AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def test_the_export_holds_events_messages_enrollments_and_the_suppression(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        httpx.get(at(base, urls["shop"]), headers={"User-Agent": AGENT})
        workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
        for _ in range(3):  # an open, then the pixel fetched again twice: counted
            httpx.get(at(base, urls["open"]), headers={"User-Agent": AGENT})
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "ada@example.com", workspace.double_opt_in,
                 workspace.clock.now(), detail="asked by phone")  # fmt: skip
        data = export_person(connection, workspace.key, "ada@example.com")
    json.dumps(data)  # JSON-ready
    # (told a machine's: it came within a second of sending; the export holds it all the same)
    [click] = [event for event in data["events"] if event["kind"].endswith("click")]
    assert click["properties"]["user_agent"] == AGENT
    assert click["properties"]["ip"].startswith("127.0.0.0/24")
    assert (click["name"], click["step"]) == ("welcome", "hello")
    assert set(click) == {"id", "kind", "name", "step", "properties", "occurred_at", "outbox_id"}
    [message] = data["messages"]
    opened = workspace.clock.now()
    assert [event["kind"] for event in data["events"]] == ["machine_click", "open"]
    assert data["counted"] == [{"outbox_id": message["id"], "kind": "refetch",
                                "day": opened.date().isoformat(), "events": 2,
                                "last_at": opened.isoformat()}]  # fmt: skip
    assert (message["campaign"], message["step"], message["status"]) == ("welcome", "hello", "sent")
    assert message["consent_entry_id"] is not None and message["message_id"]
    assert [(e["campaign"], e["status"]) for e in data["enrollments"]] == [("welcome", "active")]
    assert data["suppressed"]["reason"] == "unsubscribed"
    assert data["suppressed"]["entry_id"] == data["consent"][-1]["entry_id"]
    assert data["consent"][-1]["evidence"] == {"detail": "asked by phone"}
