"""`mailer run` serves /metrics and /healthz from the process that ticks and delivers: its tick
durations, message results and relay errors are there, with the paused campaign."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SECRET, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer, free_port


def test_run_exposes_its_ticks_results_and_relay_refusals(project: Path, database_url: str) -> None:
    write_csv(
        project / "news.csv",
        """
        email,first_name,consent_at,consent_confirmed_at
        ada@example.com,Ada,2026-01-01,2026-01-01
    """,
    )
    relay = ScriptedSmtpServer()
    relay.script("ada@example.com", "554 5.7.1 Client host [127.0.0.1] blocked")
    relay.start()
    port = free_port()
    environment = {
        **os.environ,
        "MAILER_SECRET_KEY": SECRET,
        "MAILER_DATABASE_URL": database_url,
        "MAILER_SMTP__PORT": str(relay.port),
        "MAILER_TRACKING__PORT": str(port),
        "MAILER_DELIVERY__PAUSE_AFTER_REFUSALS": "1",
    }
    mailer = [sys.executable, "-m", "mailer"]
    subprocess.run(
        [*mailer, "import", "news.csv", "--list", "newsletter"],
        cwd=project,
        env=environment,
        check=True,
        capture_output=True,
    )
    daemon = subprocess.Popen(
        [*mailer, "run", "--every", "1s", "--log-json"],
        cwd=project,
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert daemon.stderr is not None
    try:
        deadline = time.monotonic() + 60
        while json.loads(daemon.stderr.readline())["event"] != "delivered":
            assert time.monotonic() < deadline
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
        relay.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("mailer_tick_seconds_count", ())] >= 1
    assert samples[("mailer_tick_results_total", (("kind", "enrolled"),))] == 1
    assert samples[("mailer_tick_results_total", (("kind", "queued"),))] == 1
    assert samples[("mailer_tick_results_total", (("kind", "errors"),))] == 0
    assert samples[("mailer_messages_total", (("campaign", "welcome"), ("result", "failed")))] == 1
    assert samples[("mailer_relay_errors_total", (("kind", "refused"), ("stage", "rcpt")))] == 1
    assert samples[("mailer_campaign_paused", (("campaign", "welcome"),))] == 1
    assert health["status"] == "degraded" and health["relay"] == "ok"  # one refusal: a blip
    assert [reason["campaign"] for reason in health["reasons"]] == ["welcome"]
