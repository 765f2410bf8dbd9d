"""`mailer run` as a real process: it ticks, delivers, logs JSON lines, and stops cleanly on
SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import SECRET, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer, free_port


def test_run_ticks_and_stops_cleanly_on_sigterm(project: Path, database_url: str) -> None:
    write_csv(
        project / "news.csv",
        """
        email,first_name,consent_at,consent_confirmed_at
        ada@example.com,Ada,2026-01-01,2026-01-01
    """,
    )
    relay = ScriptedSmtpServer()
    relay.start()
    environment = {**os.environ, "MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
                   "MAILER_SMTP__PORT": str(relay.port),
                   "MAILER_TRACKING__PORT": str(free_port())}  # fmt: skip
    mailer = [sys.executable, "-m", "mailer"]
    subprocess.run([*mailer, "import", "news.csv", "--list", "newsletter"], cwd=project,
                   env=environment, check=True, capture_output=True)  # fmt: skip
    daemon = subprocess.Popen([*mailer, "run", "--every", "1s", "--log-json"], cwd=project,
                              env=environment, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert daemon.stderr is not None
    lines: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(line["event"] == "delivered" for line in lines):
        lines.append(json.loads(daemon.stderr.readline()))
    daemon.send_signal(signal.SIGTERM)
    _, rest = daemon.communicate(timeout=30)
    relay.stop()
    lines += [json.loads(line) for line in rest.splitlines()]
    assert daemon.returncode == 0
    tick = next(line for line in lines if line["event"] == "tick")
    assert tick["enrolled"] == 1 and tick["queued"] == 1
    delivered = next(line for line in lines if line["event"] == "delivered")
    assert delivered["sent"] == 1
    assert [message.recipient for message in relay.received] == ["ada@example.com"]
    events = [line["event"] for line in lines]
    assert "stopping" in events and events[-1] == "stopped"
