"""Three `mailer run` on one PostgreSQL, one killed with SIGKILL in the middle of a broadcast:
every message reaches the relay, none twice except at most one per connection the dead daemon
had open, and every outbox row ends `sent`. Counted, not timed.

MAILER_CRASH_MESSAGES sets the size: 6,000 by default (about 30 s); the issue's 20,000 takes
about 75 s on 2 cores."""

from __future__ import annotations

import os
import resource
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.store.tables import outbox
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.crash.conftest import (
    outbox_ids,
    queue_broadcast,
    run_mailer,
    statuses,
    wait_for,
)
from tests.delivery.test_pipelining import PipeliningServer

MESSAGES = int(os.environ.get("MAILER_CRASH_MESSAGES", "6000"))
POOL = 4  # SMTP connections per daemon


def held_by(workspace: Workspace, pid: int) -> set[int]:
    """The rows a daemon has claimed and not finished (its worker name holds its pid)."""
    with workspace.engine.connect() as connection:
        found = connection.scalars(select(outbox.c.id).where(
            outbox.c.status == "sending", outbox.c.lease_owner.like(f"%:{pid}:%")))  # fmt: skip
        return set(found)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.postgres
def test_three_daemons_one_killed_midway_send_every_message_with_bounded_duplicates(
    crash_project: Path, environ: dict[str, str], database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several daemons share one database on PostgreSQL; SQLite has one writer")
    started = time.monotonic()
    workspace = queue_broadcast(crash_project, environ, MESSAGES)
    queued = time.monotonic()
    try:
        with PipeliningServer() as sink:  # as Postfix: announced envelopes
            environment = {**environ, "MAILER_SMTP__PORT": str(sink.port),
                           "MAILER_SMTP__POOL_SIZE": str(POOL),
                           "MAILER_DELIVERY__RENDER_PROCESSES": "1"}  # fmt: skip
            daemons = [run_mailer(crash_project, environment, "run", "--no-serve",
                                  "--now", NOW.isoformat()) for _ in range(3)]  # fmt: skip
            wait_for(lambda: len(sink.received) > 0, 120, "the daemons start")
            first, cpu_before = time.monotonic(), cpu_seconds()
            wait_for(lambda: len(sink.received) >= MESSAGES // 3, 600, "a third sent")
            victim = daemons[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            killed_at = len(sink.received)
            # Its claimed rows are `sending` until its lease (5 minutes) ends.
            orphans = held_by(workspace, victim.pid)
            survivors = daemons[1:]

            def only_orphans_left() -> bool:
                now = statuses(workspace)
                return now["queued"] + now["deferred"] == 0 and now["sending"] == len(orphans)

            wait_for(only_orphans_left, 600, "the survivors send the rest")
            sending_done = time.monotonic()
            sink_cpu = cpu_seconds() - cpu_before
            for daemon in survivors:
                daemon.send_signal(signal.SIGTERM)
            for daemon in survivors:
                _, errors = daemon.communicate(timeout=60)
                assert daemon.returncode == 0, errors
                assert "lease lost" not in errors  # no live daemon's rows were taken over
            # After the lease: any worker takes the dead daemon's rows over.
            late = (NOW + timedelta(minutes=6)).isoformat()
            _, errors = run_mailer(crash_project, environment, "tick", "--now", late).communicate(
                timeout=300
            )
            assert statuses(workspace) == {"sent": MESSAGES}, errors
        received = outbox_ids(sink.received)
    finally:
        workspace.close()
    duplicates = {key: count - 1 for key, count in received.items() if count > 1}
    sending = sending_done - first
    print(f"\n{MESSAGES} messages: queued in {queued - started:.1f} s; sent by three daemons in "
          f"{sending:.1f} s from the first ({(MESSAGES - len(orphans)) / sending:.0f}/s); the test "
          f"process (the sink) used {sink_cpu:.1f} s of CPU then "
          f"({sink_cpu / sending:.0%} of one core); killed after {killed_at} had arrived, "
          f"holding {len(orphans)} rows; "
          f"{sum(duplicates.values())} duplicates")  # fmt: skip
    assert len(received) == MESSAGES and len(orphans) > 0
    # Only a 250 received and not yet committed is sent again: one per open connection.
    assert sum(duplicates.values()) <= POOL
    assert set(duplicates) <= orphans
