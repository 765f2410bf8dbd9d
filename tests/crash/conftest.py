"""Fixtures of the crash tests: a project whose one campaign is a broadcast (queued by the
database with one INSERT … SELECT, so 20,000 messages are queued in seconds), `mailer`
subprocesses, and counting what reached the sink by Message-ID."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.tables import outbox
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.delivery.smtp_server import Received
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
