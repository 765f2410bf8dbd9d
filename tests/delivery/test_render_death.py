"""A render process that dies (killed, out of memory, crashed) costs no message and stops no
delivery: the deliverer starts a new process, renders again one at a time what the dead one had
in hand, and a message whose render keeps killing its process is deferred, then failed.

Real forkserver render processes, killed with SIGKILL while a chunk is in flight: the template
loops long enough (a few tenths of a second a message) for the kill to land mid-render."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path

from mailer.delivery.worker import DIED, RESTARTED, Deliverer
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.delivery.test_workers import run_mailer, statuses, wait_for

Opener = Callable[..., Workspace]

FOOTER = '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
# About 7 million loop turns: a few tenths of a second of one core, in the sandbox.
SLOW = "{% for i in range(7000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
PEOPLE = ("ada@example.com,Ada", "bob@example.com,Bob", "cy@example.com,Cy")


def with_slow_first_step(project: Path) -> None:
    (project / "templates" / "welcome" / "1.html").write_text(
        f"<p>Hello {{{{ contact.first_name }}}}</p>{SLOW}{FOOTER}"
    )


def render_processes(deliverer: Deliverer) -> list[int]:
    """The pids of the deliverer's render processes now."""
    pool = deliverer.pool
    return list(getattr(pool.executor, "_processes", None) or {}) if pool else []


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def grandchildren(pid: int) -> list[int]:
    """The render processes of a `mailer run` process: children of its forkserver."""
    found: list[int] = []
    for child in children(pid):
        with suppress(FileNotFoundError):  # it ended meanwhile
            found += children(child)
    return found


@contextmanager
def killing_every_render_process(deliverer: Deliverer) -> Iterator[list[int]]:
    """SIGKILL each render process of `deliverer` as soon as it appears; yields their pids."""
    killed: list[int] = []
    done = threading.Event()

    def kill() -> None:
        # Polled with sleep, not done.wait(timeout): under faketime (make test-future) a timed
        # wait of a thread waits for the moved clock, 400 days.
        while not done.is_set():
            time.sleep(0.002)
            for pid in render_processes(deliverer):
                if pid not in killed:
                    with suppress(ProcessLookupError):  # ended meanwhile
                        os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield killed
    finally:
        done.set()
        killer.join()


def test_a_render_process_killed_mid_chunk_is_replaced_and_every_message_is_sent_once(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    with_slow_first_step(project)
    workspace = open_workspace(DELIVERY__RENDER_PROCESSES="1")
    queue_welcome(workspace, project, *PEOPLE)
    deliverer = Deliverer(workspace)
    try:
        with ThreadPoolExecutor(1) as thread:
            delivering = thread.submit(deliverer.deliver, NOW)
            wait_for(lambda: bool(render_processes(deliverer)))
            first = deliverer.pool
            os.kill(render_processes(deliverer)[0], signal.SIGKILL)  # the chunk is in its hands
            report = delivering.result(timeout=120)
        assert (report.sent, report.deferred, report.failed) == (3, 0, 0)
        assert deliverer.pool is not first  # a new pool rendered them
        # The same deliverer goes on delivering.
        queue_welcome(workspace, project, "dan@example.com,Dan")
        assert deliverer.deliver(NOW).sent == 1
    finally:
        deliverer.close()
    assert statuses(workspace) == {"sent": 4}
    assert sorted(m.recipient for m in smtp_server.received) == [
        "ada@example.com", "bob@example.com", "cy@example.com", "dan@example.com"
    ]  # fmt: skip


def test_a_message_whose_render_keeps_killing_its_process_is_deferred_then_failed(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    with_slow_first_step(project)
    workspace = open_workspace(DELIVERY__RENDER_PROCESSES="1", DELIVERY__GIVE_UP_AFTER="1h")
    queue_welcome(workspace, project, "ada@example.com,Ada")
    deliverer = Deliverer(workspace)
    try:
        with killing_every_render_process(deliverer) as killed:
            first = deliverer.deliver(NOW)
            ada = rows(workspace)["ada@example.com"]
            assert (first.deferred, ada["status"]) == (1, "deferred")
            assert ada["reason"] == f"render: {DIED} rendering this message alone"
            later = deliverer.deliver(NOW + timedelta(hours=2))  # past give_up_after
            ada = rows(workspace)["ada@example.com"]
            assert (later.failed, ada["status"]) == (1, "failed")
            assert ada["reason"] == (f"render: {DIED} rendering this message alone; "
                                     "gave up after 2 attempts")  # fmt: skip
            again = deliverer.deliver(NOW + timedelta(days=1))
            assert not any(again.counts().values())
        # Each run: the process the chunk was in, then the one it was rendered alone in.
        assert len(killed) == 4
    finally:
        deliverer.close()
    assert smtp_server.received == []


def test_a_render_process_that_died_between_runs_is_replaced_at_the_next_run(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace(DELIVERY__RENDER_PROCESSES="1")
    queue_welcome(workspace, project, "ada@example.com,Ada")
    deliverer = Deliverer(workspace)
    try:
        assert deliverer.deliver(NOW).sent == 1
        pool = deliverer.pool
        assert pool is not None
        os.kill(render_processes(deliverer)[0], signal.SIGKILL)
        wait_for(lambda: bool(getattr(pool.executor, "_broken", False)))
        queue_welcome(workspace, project, "bob@example.com,Bob")
        assert deliverer.deliver(NOW).sent == 1
    finally:
        deliverer.close()
    assert statuses(workspace) == {"sent": 2}


def test_mailer_run_logs_a_killed_render_process_in_one_line_and_sends_everything(
    open_workspace: Opener, project: Path, environ: dict[str, str],
    smtp_server: ScriptedSmtpServer,
) -> None:  # fmt: skip
    with_slow_first_step(project)
    workspace = open_workspace()
    queue_welcome(workspace, project, *PEOPLE)
    environment = {**os.environ, **environ, "MAILER_SMTP__PORT": str(smtp_server.port),
                   "MAILER_DELIVERY__RENDER_PROCESSES": "1"}  # fmt: skip
    daemon = run_mailer(project, environment, "run", "--log-json", "--no-serve",
                        "--now", NOW.isoformat())  # fmt: skip
    try:
        wait_for(lambda: bool(grandchildren(daemon.pid)))
        os.kill(grandchildren(daemon.pid)[0], signal.SIGKILL)
        wait_for(lambda: statuses(workspace) == {"sent": 3})
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, errors = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, errors
    died = [json.loads(line) for line in errors.splitlines() if "render process died" in line]
    assert [(line["level"], line["event"]) for line in died] == [("warning", RESTARTED)]
    assert "Traceback" not in errors and "delivery failed" not in errors
    assert sorted(m.recipient for m in smtp_server.received) == sorted(
        person.split(",")[0] for person in PEOPLE
    )
