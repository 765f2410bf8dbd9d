"""Workers that run at once, die, or are told to stop: every message is sent, once (or, after a
SIGKILL, at most once more per connection the dead worker had open)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from mailer.delivery.worker import Deliverer
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer

Opener = Callable[..., Workspace]


def people(count: int) -> list[str]:
    return [f"p{n:04d}@example.com,P{n}" for n in range(count)]


def statuses(workspace: Workspace) -> Counter[str]:
    return Counter(str(row["status"]) for row in rows(workspace).values())


@pytest.mark.postgres
def test_two_workers_on_postgresql_send_every_row_exactly_once(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SKIP LOCKED claims are PostgreSQL's; SQLite has one writer")
    first = open_workspace(DELIVERY__BATCH_SIZE="20")
    queue_welcome(first, project, *people(300))
    second = open_workspace(DELIVERY__BATCH_SIZE="20")
    workers = [Deliverer(first, owner="worker-1"), Deliverer(second, owner="worker-2")]
    reports = []
    threads = [threading.Thread(target=lambda w=w: reports.append(w.deliver(NOW)))
               for w in workers]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for worker in workers:
        worker.close()
    assert sum(report.sent for report in reports) == 300
    assert all(report.sent > 0 for report in reports)  # both took part
    received = Counter(message.recipient for message in smtp_server.received)
    assert len(received) == 300 and set(received.values()) == {1}
    assert statuses(first) == {"sent": 300}


def run_mailer(project: Path, environment: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailer", *args], cwd=project,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkill_mid_batch_then_a_new_worker_sends_every_row_with_bounded_duplicates(
    open_workspace: Opener, project: Path, environ: dict[str, str]
) -> None:
    pool = 4
    with ScriptedSmtpServer(delay=0.02) as relay:
        workspace = open_workspace(SMTP__PORT=str(relay.port))
        queue_welcome(workspace, project, *people(200))
        environment = {**os.environ, **environ, "MAILER_SMTP__PORT": str(relay.port),
                       "MAILER_SMTP__POOL_SIZE": str(pool),
                       "MAILER_DELIVERY__BATCH_SIZE": "50"}  # fmt: skip
        iso = lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        worker = run_mailer(project, environment, "tick", "--now", iso(NOW))
        wait_for(lambda: len(relay.received) >= 40)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        before = statuses(workspace)
        assert before["sending"] > 0 and before["sent"] > 0  # killed mid-batch
        # The dead worker's lease (5 minutes) ends; a new worker takes its rows over.
        after = run_mailer(project, environment, "tick", "--now", iso(NOW + timedelta(minutes=6)))
        _, errors = after.communicate(timeout=120)
        assert after.returncode == 0, errors
    assert statuses(workspace) == {"sent": 200}
    received = Counter(message.recipient for message in relay.received)
    assert len(received) == 200
    duplicates = sum(count - 1 for count in received.values())
    # Only a 250 received and not yet committed can be repeated: one per open connection.
    assert duplicates <= pool


def test_sigterm_finishes_what_is_in_flight_and_gives_back_the_rest(
    open_workspace: Opener, project: Path, environ: dict[str, str]
) -> None:
    with ScriptedSmtpServer(delay=0.02) as relay:
        workspace = open_workspace(SMTP__PORT=str(relay.port))
        queue_welcome(workspace, project, *people(200))
        environment = {**os.environ, **environ, "MAILER_SMTP__PORT": str(relay.port),
                       "MAILER_DELIVERY__BATCH_SIZE": "50"}  # fmt: skip
        # The daemon lives on the test's date: at the wall clock's it would queue the second
        # welcome step too (two days after NOW), whatever day the suite runs.
        daemon = run_mailer(project, environment, "run", "--log-json", "--no-serve",
                            "--now", NOW.isoformat())  # fmt: skip
        wait_for(lambda: len(relay.received) >= 40)
        daemon.send_signal(signal.SIGTERM)
        _, errors = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, errors
    now = statuses(workspace)
    assert "sending" not in now  # no lease left behind
    assert now["sent"] + now["queued"] == 200 and now["queued"] > 0
    sent = {email for email, row in rows(workspace).items() if row["status"] == "sent"}
    assert sorted(message.recipient for message in relay.received) == sorted(sent)
