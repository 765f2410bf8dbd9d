"""The database restarts (`pg_ctl restart -m fast`, on a server of the test's own), or stays
down for seconds, while a real `mailer serve` takes opens and clicks over real HTTP: every hit
answered before, during and after is stored exactly once afterwards (a batch that could not be
written stays in the buffer and is written again; while the database is away, requests wait for
room once `flush_size` hits are held), and `mailer serve` still exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailer.store.tables import events
from mailer.workspace import Workspace
from tests.conftest import SECRET
from tests.crash.conftest import OwnPostgres, wait_for
from tests.crash.test_tracking_killed import answers
from tests.helpers import refetches
from tests.tracking.conftest import at, free_port, sent  # noqa: F401  # the fixture
from tests.tracking.test_recipient import CHROME

FLUSH_SIZE = 100  # hits waiting or being written: up to this many cross the restart
CLICKS = ("shop", "cups", "grinders")
WARM_UP = f"{CHROME} warm-up"


@pytest.fixture
def environ(own_postgres: OwnPostgres) -> dict[str, str]:
    """The project's database is the test's own PostgreSQL, which the test restarts."""
    return {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": own_postgres.url}


def stored_hits(workspace: Workspace) -> Counter[str]:
    """The hits stored, by the user agent that names each (opens and clicks, person or machine).
    A pixel fetched again within a minute is counted, not stored: `refetches`."""
    with workspace.engine.connect() as connection:
        found = connection.execute(select(events.c.properties).where(
            events.c.kind.in_(("open", "click", "machine_open", "machine_click"))))  # fmt: skip
        return Counter(str(properties["user_agent"]) for (properties,) in found)


def recorded(workspace: Workspace) -> int:
    return sum(stored_hits(workspace).values()) + refetches(workspace)


def is_open(agent: str) -> bool:
    """Whether `Load` asked for the pixel with this user agent (odd sequence numbers)."""
    return int(agent.rsplit("-", 1)[1]) % 2 == 1


class Load:
    """Threads that open and click, each hit named by its own user agent; what was answered
    (200 for an open, 302 for a click), by phase: before, during and after the restart."""

    def __init__(self, base: str, urls: dict[str, str]) -> None:
        self.base, self.urls = base, urls
        self.phase = "before"
        self.answered: dict[str, str] = {}  # user agent -> phase
        self.refused: Counter[str] = Counter()  # answers other than 200/302, by phase
        self.lock = threading.Lock()
        self.slowest: dict[str, float] = {}  # seconds, the longest wait for an answer
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(4)]

    def run(self, number: int) -> None:
        with httpx.Client() as client:
            sequence = 0
            while not self.stop.is_set():
                sequence += 1
                agent = f"{CHROME} hit/{number}-{sequence}"
                # Opens and clicks in turn: a click never waits for room, and threads that
                # only clicked would keep the buffer full and the opens waiting.
                kind = "open" if sequence % 2 else CLICKS[sequence // 2 % len(CLICKS)]
                phase, started = self.phase, time.monotonic()
                try:
                    reply = client.get(at(self.base, self.urls[kind]),
                                       headers={"User-Agent": agent}, timeout=60)  # fmt: skip
                except httpx.TransportError as error:
                    with self.lock:
                        self.refused[f"{phase}: {type(error).__name__}"] += 1
                    continue
                with self.lock:
                    waited = round(time.monotonic() - started, 2)
                    self.slowest[phase] = max(self.slowest.get(phase, 0.0), waited)

                    if reply.status_code == (200 if kind == "open" else 302):
                        self.answered[agent] = phase
                    else:
                        self.refused[phase] += 1
                time.sleep(0.002)

    def answered_in(self, phase: str) -> int:
        """Hits answered of those asked in `phase` (one asked just before the phase changed
        may be answered after it: it counts for the phase it was asked in)."""
        with self.lock:
            return sum(1 for asked in self.answered.values() if asked == phase)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()  # each ends within its request's timeout


@pytest.mark.postgres
@pytest.mark.parametrize("outage", [0.0, 5.0], ids=["restart", "down-5s"])
def test_every_hit_answered_across_a_database_restart_is_stored_once(
    sent: tuple[Workspace, dict[str, str]],  # noqa: F811
    project: Path,
    environ: dict[str, str],
    own_postgres: OwnPostgres,
    outage: float,
) -> None:
    workspace, urls = sent
    port = free_port()
    environment = {**os.environ, **environ, "MAILER_TRACKING__PORT": str(port),
                   "MAILER_TRACKING__FLUSH_SIZE": str(FLUSH_SIZE)}  # fmt: skip
    log = project / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen([sys.executable, "-m", "mailer", "serve"], cwd=project,
                                  env=environment, stdout=output,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/healthz"), 30, "mailer serve listens")
        # The event writer process starts with the first batch (seconds on a busy machine,
        # while opens wait for room): started before the load, which measures the restart.
        for kind in ("open", "shop"):
            httpx.get(at(base, urls[kind]), headers={"User-Agent": WARM_UP}, timeout=120)
        wait_for(lambda: stored_hits(workspace)[WARM_UP] == 2, 120, "the event writer starts")
        with Load(base, urls) as load:
            wait_for(lambda: recorded(workspace) >= 200, 60, "hits stored")
            load.phase, restarting = "during", time.monotonic()
            if outage:
                own_postgres.down_for(outage)  # requests wait for room meanwhile
            else:
                own_postgres.restart()  # fast: the writer's connections are terminated
            load.phase, restarting = "after", time.monotonic() - restarting
            wait_for(lambda: load.answered_in("after") >= 300, 60, "hits after the restart")
        answered = dict(load.answered)
        wait_for(lambda: recorded(workspace) >= len(answered) + 2, 60,
                 "every hit answered is stored")  # fmt: skip
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert server.returncode == 0, log.read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
    stored, refetched = stored_hits(workspace), refetches(workspace)
    phases = Counter(answered.values())
    assert stored.pop(WARM_UP) == 2
    twice = {agent: count for agent, count in stored.items() if count > 1}
    # Each click is a row of its own. The opens of the one message are mostly the pixel fetched
    # again (rule 8), counted without their user agents: each open answered is a row or one of
    # the count, and neither holds one that was not answered.
    missing = {agent for agent in answered if not is_open(agent)} - set(stored)
    unanswered = set(stored) - set(answered)
    opens_answered = sum(1 for agent in answered if is_open(agent))
    opens_stored = sum(1 for agent in stored if is_open(agent))
    failures = log.read_text().count("cannot write opens and clicks")
    print(f"\nanswered {len(answered)} ({dict(phases)}), refused {dict(load.refused)}; stored "
          f"{sum(stored.values())}; {len(twice)} twice, {len(missing)} missing, "
          f"{len(unanswered)} stored unanswered, opens {opens_stored} stored + {refetched} "
          f"counted of {opens_answered}; {failures} failed writes logged; restart "
          f"{restarting:.1f} s, slowest answers {dict(load.slowest)} s")  # fmt: skip
    assert phases["before"] > 0 and phases["during"] > 0 and phases["after"] >= 300
    assert not twice and not missing and not unanswered, log.read_text()[-3000:]
    assert opens_stored + refetched == opens_answered, log.read_text()[-3000:]
    assert not load.refused, log.read_text()[-3000:]
