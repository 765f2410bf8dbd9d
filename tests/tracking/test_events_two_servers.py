"""Two `mailer serve` processes on one PostgreSQL database take `/events` batches for the same
contacts at once, over real HTTP, half of them in reverse order so that row locks would cross
(issue 16: 20 of 40 batches answered 503 `deadlock detected`). Every batch is answered 2xx,
every event is stored once, and each contact's score is what the batches add up to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.scoring import growth
from mailer.store.tables import contacts, events
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.crash.conftest import wait_for
from tests.helpers import run_import
from tests.tracking.conftest import free_port
from tests.tracking.test_events_api import SHOP_SETTINGS, TOKEN

PEOPLE = 60
BATCHES = 40
POINTS = 2.0
SENDERS = 8  # threads posting at once, half to each server
SCORING = f"""
[scoring]
points = {{ purchased = {POINTS} }}

[lifecycle]
stages = ["customer", "regular"]
rules = {{ regular = "score > 30" }}
"""


@pytest.fixture
def shop(tmp_path: Path, environ: dict[str, str], database_url: str) -> Iterator[Workspace]:
    """The shop of test_events_api with PEOPLE customers, points for a purchase and a stage
    that a score reaches."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: two servers cannot deadlock on it")
    (tmp_path / "shop").mkdir()
    settings_file = tmp_path / "shop" / "settings.toml"
    settings_file.write_text(textwrap.dedent(SHOP_SETTINGS) + SCORING)
    workspace = Workspace(load_settings(settings_file, environ=environ), FrozenClock(NOW))
    rows = "".join(f"p{n}@example.com,P{n},2026-11-01T09:00Z\n" for n in range(PEOPLE))
    run_import(workspace, write_csv(tmp_path / "people.csv",
                                    "email,first_name,consent_at\n" + rows), "shop")  # fmt: skip
    yield workspace
    workspace.close()


class Servers:
    """`mailer serve` processes on free ports, each logging to a file; SIGTERM at the end."""

    def __init__(self, project: Path, environ: dict[str, str], count: int) -> None:
        self.project, self.environ = project, environ
        self.ports = [free_port() for _ in range(count)]
        self.logs = [project / f"serve-{n}.log" for n in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> list[str]:
        for port, log in zip(self.ports, self.logs, strict=True):
            environment = {**os.environ, **self.environ, "MAILER_TRACKING__PORT": str(port),
                           "MAILER_TRACKING__EVENTS_TOKEN": TOKEN,
                           "MAILER_NOW": NOW.isoformat()}  # fmt: skip
            with log.open("wb") as output:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "mailer", "serve"], cwd=self.project,
                    env=environment, stdout=output, stderr=subprocess.STDOUT))  # fmt: skip
        bases = [f"http://127.0.0.1:{port}" for port in self.ports]
        try:
            for base, process in zip(bases, self.processes, strict=True):
                wait_for(partial(_listening, process, base), 60, f"mailer serve listens at {base}")
                assert process.poll() is None, self.text()
        except BaseException:
            self.__exit__()  # no `with` block to end them
            raise
        return bases

    def __exit__(self, *_: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    def text(self) -> str:
        return "\n".join(log.read_text() for log in self.logs)


def _listening(process: subprocess.Popen[bytes], base: str) -> bool:
    """Whether the server answers, or has exited (said by the caller)."""
    try:
        httpx.get(f"{base}/healthz")
    except httpx.TransportError:
        return process.poll() is not None
    return True


def batch(number: int, ids: list[int]) -> list[dict[str, Any]]:
    """Every contact purchases once, at a time of the batch's own; odd batches name them in
    reverse order, and every third contact by email, the others by id."""
    order = ids if number % 2 == 0 else ids[::-1]
    at = (NOW - timedelta(minutes=BATCHES - number)).isoformat()
    return [{"contact_id": contact_id, "event": "purchased", "at": at,
             "properties": {"batch": number, "contact": contact_id}}
            if contact_id % 3 else
            {"email": f"p{ids.index(contact_id)}@example.com", "event": "purchased", "at": at,
             "properties": {"batch": number, "contact": contact_id}}
            for contact_id in order]  # fmt: skip


def test_two_servers_take_events_for_the_same_contacts_in_crossing_orders(
    shop: Workspace, environ: dict[str, str], tmp_path: Path
) -> None:
    project = tmp_path / "shop"
    with shop.engine.connect() as connection:
        found = connection.execute(select(contacts.c.email, contacts.c.id))
        by_email = {row.email: row.id for row in found}
    ids = [by_email[f"p{n}@example.com"] for n in range(PEOPLE)]
    answers: list[tuple[int, int, str]] = []
    lock = threading.Lock()
    together = threading.Barrier(SENDERS)

    def send(sender: int, base: str) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            together.wait()
            for number in range(sender, BATCHES, SENDERS):
                reply = client.post("/events", json=batch(number, ids))
                with lock:
                    answers.append((number, reply.status_code, reply.text))

    servers = Servers(project, environ, 2)
    with servers as bases:
        threads = [threading.Thread(target=send, args=(sender, bases[sender % 2]))
                   for sender in range(SENDERS)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    log = servers.text()
    refused = [(number, status, body) for number, status, body in answers if status // 100 != 2]
    assert len(answers) == BATCHES and refused == [], log[-3000:]
    assert all(body == f'{{"recorded": {PEOPLE}, "unknown": []}}' for *_, body in answers)
    assert "events refused" not in log and "deadlock: gave up" not in log
    # A retried deadlock victim is allowed (and logged); with locks in one order there are none.
    print(
        f"\n{BATCHES} batches of {PEOPLE} events to two servers: "
        f"{log.count('deadlock: trying again')} deadlock retries"
    )
    with shop.engine.connect() as connection:
        stored = Counter((row.contact_id, row.properties["contact"], row.properties["batch"])
                         for row in connection.execute(select(events.c.contact_id,
                                                              events.c.properties)))  # fmt: skip
        scores = {
            row.id: row.score_epoch
            for row in connection.execute(select(contacts.c.id, contacts.c.score_epoch))
        }
        stages = set(connection.scalars(select(contacts.c.stage)))
    assert stored == Counter({(contact_id, contact_id, number): 1 for contact_id in ids
                              for number in range(BATCHES)})  # fmt: skip
    half_life = shop.settings.scoring.half_life
    expected = sum(POINTS * growth(NOW - timedelta(minutes=BATCHES - number), half_life)
                   for number in range(BATCHES))  # fmt: skip
    assert scores == {contact_id: pytest.approx(expected) for contact_id in ids}
    assert stages == {"regular"}
