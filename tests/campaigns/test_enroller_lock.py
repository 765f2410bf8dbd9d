"""Several processes ticking on one PostgreSQL: one enroller at a time (an advisory lock), the
others still advance due steps; the lock of a process that dies goes with its session."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.pool import NullPool

from mailer.campaigns.engine import TickReport, tick
from mailer.campaigns.enrollment import enroll
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.engine import ENROLLER_LOCK
from mailer.store.tables import enrollments, outbox
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import count, run_import

HOLD = "SELECT pg_advisory_lock(:key, hashtext(current_schema()))"
HELD = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :key
          AND objid = hashtext(current_schema())::oid AND objsubid = 2 AND granted"""


def newsletter(workspace: Workspace, folder: Path, first: int, last: int) -> None:
    """Contacts first..last on the newsletter, consent confirmed: the welcome sequence's."""
    rows = "".join(f"c{n}@example.com,C{n},2026-11-01T09:00Z,2026-11-01T09:05Z\n"
                   for n in range(first, last + 1))  # fmt: skip
    path = write_csv(folder / f"people-{first}.csv",
                     "email,first_name,consent_at,consent_confirmed_at\n" + rows)  # fmt: skip
    run_import(workspace, path, "newsletter")


def held(connection: Connection) -> int:
    return int(connection.scalar(text(HELD), {"key": ENROLLER_LOCK}) or 0)


def wait_until_released(workspace: Workspace) -> None:
    """The server ends a closed session on its own time: a client's goodbye or a dead socket
    returns at once, the backend lets its locks go a moment later."""
    with workspace.engine.connect() as connection:
        for _ in range(200):
            if not held(connection):
                break
            time.sleep(0.05)
        assert held(connection) == 0


@pytest.fixture
def postgres(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("the enroller lock is PostgreSQL's (SQLite has one writer)")
    return database_url


def test_while_another_process_holds_the_lock_a_tick_advances_but_enrolls_nobody(
    workspace: Workspace, postgres: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    newsletter(workspace, tmp_path, 1, 3)
    with workspace.engine.begin() as connection:  # enrolled, the first step not queued yet
        enroll(connection, workspace.settings, "welcome", workspace.settings.campaigns["welcome"],
               NOW)  # fmt: skip
    newsletter(workspace, tmp_path, 4, 5)
    holder = create_engine(postgres, poolclass=NullPool).connect()  # close() ends the session
    holder.execute(text(HOLD), {"key": ENROLLER_LOCK})
    with caplog.at_level(logging.DEBUG, logger="mailer"):
        report = tick(workspace.engine, workspace.settings, NOW + timedelta(minutes=1))
    assert (report.enrolled, report.queued) == (0, 3)  # the due steps went on
    assert "enrollment skipped this tick" in caplog.text
    holder.close()  # its session ends: PostgreSQL lets the lock go
    wait_until_released(workspace)
    report = tick(workspace.engine, workspace.settings, NOW + timedelta(minutes=2))
    assert (report.enrolled, report.queued) == (2, 2)


def test_when_the_holder_is_killed_the_next_tick_of_another_process_enrolls(
    workspace: Workspace, postgres: str, tmp_path: Path
) -> None:
    newsletter(workspace, tmp_path, 1, 4)
    hold = ("import sys, time; from sqlalchemy import create_engine, text; "
            "c = create_engine(sys.argv[1]).connect(); "
            f"c.execute(text({HOLD!r}), {{'key': {ENROLLER_LOCK}}}); c.commit(); "
            "print('held', flush=True); time.sleep(3600)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", hold, postgres], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert tick(workspace.engine, workspace.settings, NOW).enrolled == 0
        holder.send_signal(signal.SIGKILL)  # no goodbye to the server: the socket just closes
        holder.wait()
    finally:
        holder.kill()
    wait_until_released(workspace)  # the server notices the closed socket, ends that session
    report = tick(workspace.engine, workspace.settings, NOW + timedelta(minutes=1))
    assert (report.enrolled, report.queued) == (4, 4)


def test_two_processes_ticking_at_once_enroll_and_queue_each_contact_once(
    project: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    """On PostgreSQL the enroller lock; on SQLite, the same code under its one write lock."""
    settings = load_settings(project / "settings.toml", environ=environ)
    first, second = Workspace(settings, FrozenClock(NOW)), Workspace(settings, FrozenClock(NOW))
    try:
        newsletter(first, tmp_path, 1, 300)
        reports: list[TickReport] = []
        both = threading.Barrier(2)

        def ticking(workspace: Workspace) -> None:
            both.wait()
            reports.append(tick(workspace.engine, workspace.settings, NOW))

        threads = [threading.Thread(target=ticking, args=(w,)) for w in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(reports) == 2
        assert sum(report.enrolled for report in reports) == 300
        assert sum(report.queued for report in reports) == 300
        assert count(first, enrollments) == 300
        with first.engine.connect() as connection:
            per_contact = select(outbox.c.contact_id, func.count().label("n")).group_by(
                outbox.c.contact_id).subquery()  # fmt: skip
            assert connection.scalar(select(func.max(per_contact.c.n))) == 1
        assert count(first, outbox) == 300
    finally:
        first.close()
        second.close()


def test_two_mailer_tick_processes_at_once_enroll_queue_and_send_each_contact_once(
    workspace: Workspace, project: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    """The same as two `mailer tick` processes (each its own engine, pool and lock session),
    started together, into a real SMTP server: each person gets the welcome message once."""
    people = 600
    newsletter(workspace, tmp_path, 1, people)
    with ScriptedSmtpServer() as relay:
        environment = {**os.environ, **environ, "MAILER_SMTP__PORT": str(relay.port)}
        command = [sys.executable, "-m", "mailer", "tick", "--now", NOW.isoformat(), "--json"]
        ticks = [subprocess.Popen(command, cwd=project, env=environment, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]  # fmt: skip
        outputs = [tick_.communicate(timeout=300) for tick_ in ticks]
        for tick_, (_, errors) in zip(ticks, outputs, strict=True):
            assert tick_.returncode == 0, errors
        reports = [json.loads(out) for out, _ in outputs]
        received = Counter(message.recipient for message in relay.received)
    assert sum(report["enrolled"] for report in reports) == people, reports
    assert sum(report["queued"] for report in reports) == people, reports
    assert sum(report["sent"] for report in reports) == people, reports  # once in all
    assert count(workspace, enrollments) == people
    assert count(workspace, outbox) == people
    assert len(received) == people and set(received.values()) == {1}
