"""Render and event-writer processes end with the process they work for (`exit_with_parent`),
even when it was killed with SIGKILL and is not yet reaped: a zombie still answers os.kill, and
a worker that only asked that lived on (one was found alive 33 minutes after its server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mailer.delivery.rendering import _gone, _started, _stat

WORKER = """
import sys, time
from mailer.delivery.rendering import exit_with_parent
exit_with_parent(int(sys.argv[1]))
print("watching", flush=True)
time.sleep(60)
"""


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def watcher(pid: int) -> subprocess.Popen[str]:
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(pid)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert worker.stdout is not None and worker.stdout.readline() == "watching\n"
    return worker


def test_a_worker_ends_when_its_parent_is_killed_and_left_a_zombie() -> None:
    parent = sleeper()
    worker = watcher(parent.pid)
    try:
        time.sleep(1.5)  # the worker checks every second: it saw its parent alive
        assert worker.poll() is None
        parent.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        # Not reaped: this test is its parent, and waits for it only at the end.
        while (_stat(parent.pid) or [b""])[0] != b"Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert worker.wait(timeout=10) == 0
    finally:
        worker.kill()
        worker.wait()
        parent.kill()
        parent.wait()


def test_a_worker_ends_when_its_parent_has_exited() -> None:
    parent = sleeper()
    worker = watcher(parent.pid)
    try:
        parent.terminate()
        parent.wait()
        assert worker.wait(timeout=10) == 0
    finally:
        worker.kill()
        worker.wait()


def test_a_process_id_taken_by_a_later_process_is_not_the_parent() -> None:
    me = os.getpid()
    started = _started(me)
    assert started is not None and not _gone(me, started)
    assert _gone(me, b"1" + started)  # another start time: another process with the same id
    assert not _gone(me, None)  # without /proc: os.kill's answer
    ended = sleeper()
    ended.kill()
    ended.wait()
    assert _gone(ended.pid, None) and _gone(ended.pid, b"0")


def test_a_process_that_ends_between_open_and_read_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race that once killed the watching thread (and left its worker alive): /proc/PID/stat
    opened while the process lived, read after it was reaped, fails with ESRCH."""
    ended = sleeper()
    opened = open(f"/proc/{ended.pid}/stat", "rb")  # noqa: SIM115 (handed to _stat below)
    ended.kill()
    ended.wait()
    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: opened)
    assert _gone(ended.pid, b"0")  # what the watching thread asks every second
