"""`mailer run` as a real process: it ticks, logs JSON lines, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import SECRET, write_csv


def test_run_ticks_and_stops_cleanly_on_sigterm(project: Path, database_url: str) -> None:
    write_csv(
        project / "news.csv",
        """
        email,consent_at,consent_confirmed_at
        ada@example.com,2026-01-01,2026-01-01
    """,
    )
    environment = {**os.environ, "MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}
    mailer = [sys.executable, "-m", "mailer"]
    subprocess.run([*mailer, "import", "news.csv", "--list", "newsletter"], cwd=project,
                   env=environment, check=True, capture_output=True)  # fmt: skip
    daemon = subprocess.Popen([*mailer, "run", "--every", "1s", "--log-json"], cwd=project,
                              env=environment, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert daemon.stderr is not None
    lines: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(line["event"] == "tick" for line in lines):
        lines.append(json.loads(daemon.stderr.readline()))
    daemon.send_signal(signal.SIGTERM)
    _, rest = daemon.communicate(timeout=30)
    lines += [json.loads(line) for line in rest.splitlines()]
    assert daemon.returncode == 0
    tick = next(line for line in lines if line["event"] == "tick")
    assert tick["enrolled"] == 1 and tick["queued"] == 1
    assert [line["event"] for line in lines][-2:] == ["stopping", "stopped"]
