"""Fixtures of the crash tests: a project whose one campaign is a broadcast (queued by the
database with one INSERT … SELECT, so 20,000 messages are queued in seconds), `mailer`
subprocesses, and counting what reached the sink by Message-ID."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.tables import outbox
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.delivery.smtp_server import Received, free_port
from tests.helpers import run_import

SETTINGS = """
database_url = "sqlite:///.mailer/mailer.db"
secret_key_file = ".mailer/secret.key"

[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[lists.newsletter]
title = "Newsletter"

[segments]
everyone = 'email contains "@"'

[campaigns.launch]
kind = "broadcast"
list = "newsletter"
segment = "everyone"
template = "launch"
subject = "Our winter blend is here, {{ contact.first_name }}"
send_at = "2026-11-23T09:00Z"
"""

_MESSAGE_ID = re.compile(rb"^Message-ID: <m(\d+)\.", re.MULTILINE | re.IGNORECASE)


@pytest.fixture
def crash_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(SETTINGS))
    (root / "templates").mkdir()
    (root / "templates" / "launch.html").write_text(
        '<p>Hello {{ contact.first_name }}, <a href="https://shop.example/winter">try it</a></p>'
        '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    )
    return root


def queue_broadcast(project: Path, environ: dict[str, str], count: int) -> Workspace:
    """`count` subscribers imported, and the broadcast queued to each by one tick at NOW."""
    settings = load_settings(project / "settings.toml", environ=environ)
    workspace = Workspace(settings, FrozenClock(NOW))
    people = "".join(f"p{n:05d}@example.com,P{n},2026-01-01\n" for n in range(count))
    write_csv(project / "people.csv", "email,first_name,consent_at\n" + people)
    run_import(workspace, project / "people.csv", "newsletter")
    assert tick(workspace.engine, workspace.settings, NOW).queued == count
    return workspace


def run_mailer(project: Path, environment: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailer", *args], cwd=project,
                            env={**os.environ, **environment}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


class Daemons:
    """`mailer run` processes whose log goes to a file each (a pipe nobody reads would fill
    and stop a daemon that logs many errors); killed, if still running, when the block ends."""

    def __init__(self, project: Path, environment: dict[str, str], count: int) -> None:
        self.project, self.environment = project, environment
        self.logs = [project / f"run-{n}.log" for n in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> list[subprocess.Popen[bytes]]:
        for log in self.logs:
            with log.open("wb") as output:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "mailer", "run", "--no-serve", "--now",
                     NOW.isoformat()], cwd=self.project, env={**os.environ, **self.environment},
                    stdout=output, stderr=subprocess.STDOUT))  # fmt: skip
        return self.processes

    def __exit__(self, *_: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    def stop(self, process: subprocess.Popen[bytes]) -> str:
        """SIGTERM, then its log once it has exited (asserting exit 0)."""
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log = self.logs[self.processes.index(process)].read_text()
        assert process.returncode == 0, log[-3000:]
        return log

    def tails(self) -> str:
        return "\n".join(log.read_text()[-3000:] for log in self.logs)


def wait_for(condition: Callable[[], bool], seconds: float, why: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {why}"
        time.sleep(0.05)


def statuses(workspace: Workspace) -> Counter[str]:
    with workspace.engine.connect() as connection:
        found = connection.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
        return Counter({str(status): int(number) for status, number in found})


def outbox_ids(received: list[Received]) -> Counter[int]:
    """How many times each outbox message reached the sink, by its Message-ID."""
    counts: Counter[int] = Counter()
    for message in received:
        found = _MESSAGE_ID.search(message.data)
        assert found is not None, message.data[:500]
        counts[int(found.group(1))] += 1
    return counts


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary folder, on a free port),
    so a test may restart it: never the machine's shared server."""

    def __init__(self, bin_dir: Path, folder: Path) -> None:
        self.bin_dir, self.folder = bin_dir, folder
        self.data, self.log = folder / "data", folder / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        log = self.log.read_text() if self.log.exists() else ""
        assert done.returncode == 0, f"{tool}: {done.stdout}{done.stderr}{log[-2000:]}"

    def _ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w",
                  "-o", options, *args)  # fmt: skip

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync")  # fmt: skip
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def down_for(self, seconds: float) -> None:
        """An outage: stop the server (fast: its sessions are ended), keep it down for
        `seconds`, then start it again."""
        self.stop("fast")
        time.sleep(seconds)
        self._ctl("start")


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl (Debian keeps them out of PATH), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("needs PostgreSQL's initdb and pg_ctl (apt install postgresql) to run a "
                    "server of the test's own that it can restart")  # fmt: skip
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root, initdb needs runuser to run as the postgres user")
    # Not under pytest's tmp_path: its root-only folders are closed to the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="mailer-crash-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = OwnPostgres(bin_dir, folder)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
