"""The operator's routes over real HTTP: /metrics labels only route templates (junk paths add
no series and inject no sample), and /healthz tells the truth about the relay (a real SMTP
server that refuses), paused campaigns and the event writer."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.conftest import at

Serve = Callable[..., AbstractContextManager[str]]
# /x"} 1⏎mailer_messages_total{campaign="welcome",result="sent"} 999⏎# once decoded
INJECTION = (
    "/x%22%7D%201%0Amailer_messages_total%7Bcampaign=%22welcome%22,result=%22sent%22%7D%20999%0A%23"
)
REFUSAL = "554 5.7.1 Client host [127.0.0.1] blocked using zen.spamhaus.org"


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, parsed by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def until(check: Callable[[], Any], seconds: float = 20) -> Any:
    """Poll `check` until it returns something true: the event writer is another process."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)
    return found


def test_junk_paths_add_no_series_and_inject_no_sample(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    app = create_app(workspace)
    with serve(app) as base, httpx.Client(base_url=base) as client:
        assert client.get(at(base, urls["open"])).status_code == 200
        assert client.get("/junk/first").status_code == 404
        before = client.get("/metrics").text
        for n in range(1000):
            client.get(f"/junk/{n}/x{n * 7919}")
        forged = client.get(INJECTION)
        after = client.get("/metrics")
    assert forged.status_code == 404
    assert after.headers["content-type"].startswith("text/plain")
    parsed = samples(after.text)  # parses: no line was broken by a path
    values = {value for _, labels in parsed for _, value in labels}
    assert not [v for v in values if "junk" in v or '"' in v or "\n" in v or "x}" in v]
    assert {name for name, _ in parsed} == {name for name, _ in samples(before)}
    sent_ = ("mailer_messages_total", (("campaign", "welcome"), ("result", "sent")))
    assert parsed[sent_] == samples(before)[sent_]
    assert len(after.text) - len(before) < 200  # only counts changed, nothing per path
    unmatched = (("code", "4xx"), ("route", "unmatched"))
    assert (
        parsed[("mailer_requests_total", unmatched)]
        - samples(before)[("mailer_requests_total", unmatched)]
        == 1001
    )
    routes = {dict(labels)["route"] for name, labels in parsed if name == "mailer_requests_total"}
    templates = {getattr(route, "path", "") for route in app.routes}
    # The registry is the process's: apps of earlier tests served the providers' webhooks.
    templates |= {f"/webhooks/{name}" for name in ("ses", "postmark", "sendgrid", "mailgun")}
    assert "/o/{token}.gif" in routes
    assert routes <= templates | {"/o/{token}.gif", "unmatched"}


def test_metrics_show_sent_messages_queues_and_recorded_opens(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        httpx.get(at(base, urls["open"]), headers={"User-Agent": "Mozilla/5.0 Chrome/126.0"})
        parsed = until(
            lambda: (
                (found := samples(httpx.get(f"{base}/metrics").text)).get(
                    ("mailer_events_recorded_total", ())
                )
                == 1
                and found
            )
        )
    assert parsed[("mailer_requests_total", (("code", "2xx"), ("route", "/o/{token}.gif")))] >= 1
    assert parsed[("mailer_messages_total", (("campaign", "welcome"), ("result", "sent")))] >= 1
    assert parsed[("mailer_outbox_messages", (("status", "queued"),))] == 0
    assert parsed[("mailer_event_buffer_depth", ())] == 0


def test_healthz_is_ok_when_the_relay_answers_and_nothing_is_paused(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, _ = sent
    with serve(create_app(workspace)) as base:
        answer = httpx.get(f"{base}/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "reasons": [], "relay": "ok", "buffered": 0}


def test_healthz_is_degraded_with_reasons_while_the_relay_refuses_and_the_campaign_is_paused(
    project: Path,
    environ: dict[str, str],
    clock: FrozenClock,
    smtp_server: ScriptedSmtpServer,
    serve: Serve,
) -> None:
    settings = load_settings(
        project / "settings.toml",
        environ={
            **environ,
            "MAILER_SMTP__PORT": str(smtp_server.port),
            "MAILER_DELIVERY__RENDER_PROCESSES": "0",
            "MAILER_DELIVERY__PAUSE_AFTER_REFUSALS": "3",
        },
    )
    workspace = Workspace(settings, clock)
    people = ["ada@example.com", "bob@example.com", "cy@example.com", "dee@example.com"]
    queue_welcome(workspace, project, *(f"{person},Ada" for person in people))
    for person in people:
        smtp_server.script(person, REFUSAL)
    try:
        report = deliver(workspace)
        with serve(create_app(workspace)) as base:
            answer = httpx.get(f"{base}/healthz")
    finally:
        workspace.close()
    assert report.paused == ["welcome"]
    assert answer.status_code == 200  # the endpoint itself still records opens and unsubscribes
    body = answer.json()
    assert body["status"] == "degraded" and body["relay"] == "failing"
    relay, paused = body["reasons"]
    assert relay["check"] == "relay_failing" and "5.7.1" in relay["message"]
    assert paused["check"] == "campaign_paused" and paused["campaign"] == "welcome"
    assert "refused 3 messages in a row" in paused["message"]


def test_healthz_says_the_event_writer_is_behind_while_the_database_refuses_its_writes(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent

    def health(base: str) -> dict[str, Any]:
        answer = httpx.get(f"{base}/healthz")
        assert answer.status_code == 200
        body: dict[str, Any] = answer.json()
        return body

    with serve(create_app(workspace)) as base:
        with workspace.engine.begin() as connection:  # the events table is gone for a while
            connection.execute(text("ALTER TABLE events RENAME TO events_away"))
        httpx.get(at(base, urls["open"]))
        behind = until(lambda: "failed" in str((body := health(base))["reasons"]) and body)
        with workspace.engine.begin() as connection:
            connection.execute(text("ALTER TABLE events_away RENAME TO events"))
        caught_up = until(lambda: (body := health(base))["status"] == "ok" and body)
    [reason] = behind["reasons"]
    assert reason["check"] == "event_writer_behind" and "events" in reason["message"]
    assert behind["buffered"] == 1 and caught_up["buffered"] == 0
    with workspace.engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM events WHERE kind LIKE '%open'")) == 1


def test_healthz_counts_the_batch_being_written_while_its_write_hangs(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    """A write that neither ends nor fails (the table locked by another transaction) holds
    its batch: those hits count as answered and not written, up to flush_size (1 here)."""
    workspace, urls = sent
    with serve(create_app(workspace)) as base, httpx.Client(base_url=base) as client:
        with workspace.engine.begin() as locked:  # SQLite: BEGIN IMMEDIATE takes the lock
            if locked.dialect.name == "postgresql":
                locked.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))
            assert client.get(at(base, urls["open"])).status_code == 200
            # The batch is taken for writing: none waits, one is being written.
            until(lambda: samples(client.get("/metrics").text)
                  [("mailer_event_buffer_depth", ())] == 0)  # fmt: skip
            hanging = client.get("/healthz").json()
        caught_up = until(lambda: (body := client.get("/healthz").json())["status"] == "ok"
                          and body)  # fmt: skip
    assert hanging["status"] == "degraded" and hanging["buffered"] == 1
    [reason] = hanging["reasons"]
    assert reason["check"] == "event_writer_behind"
    assert "1 opens and clicks wait in memory: new ones wait" in reason["message"]
    assert caught_up["buffered"] == 0
    with workspace.engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM events WHERE kind LIKE '%open'")) == 1


def test_healthz_is_503_down_when_the_database_cannot_answer(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, _ = sent
    with serve(create_app(workspace)) as base:
        with workspace.engine.begin() as connection:
            connection.execute(text("ALTER TABLE campaign_pauses RENAME TO pauses_away"))
        answer = httpx.get(f"{base}/healthz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "down"
    [reason] = body["reasons"]
    assert reason["check"] == "database_unreachable" and "campaign_pauses" in reason["message"]
