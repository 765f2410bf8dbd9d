"""The database restarts in the middle of a broadcast (`pg_ctl restart -m fast`, on a server of
the test's own): two `mailer run` reconnect and finish; every message reaches the relay, none
twice except at most one per connection of each daemon, every outbox row ends `sent`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import SECRET
from tests.crash.conftest import (
    Daemons,
    OwnPostgres,
    outbox_ids,
    queue_broadcast,
    statuses,
    wait_for,
)
from tests.delivery.test_pipelining import PipeliningServer

MESSAGES = 3000
POOL = 4  # SMTP connections per daemon
DAEMONS = 2


@pytest.mark.postgres
def test_daemons_reconnect_after_the_database_restarts_and_send_everything_once(
    crash_project: Path, own_postgres: OwnPostgres
) -> None:
    environ = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": own_postgres.url}
    workspace = queue_broadcast(crash_project, environ, MESSAGES)
    try:
        with PipeliningServer() as sink:  # as Postfix: announced envelopes
            environment = {**environ, "MAILER_SMTP__PORT": str(sink.port),
                           "MAILER_SMTP__POOL_SIZE": str(POOL),
                           "MAILER_DELIVERY__RENDER_PROCESSES": "1"}  # fmt: skip
            runs = Daemons(crash_project, environment, DAEMONS)
            with runs as daemons:
                wait_for(lambda: len(sink.received) >= MESSAGES // 3, 300, "a third sent")
                own_postgres.restart()
                restarted_at = len(sink.received)
                # Well within the 5-minute lease: the daemons must not wait for it to end.
                for _ in range(1200):
                    if (now := statuses(workspace)) == {"sent": MESSAGES}:
                        break
                    time.sleep(0.05)
                assert now == {"sent": MESSAGES}, runs.tails()
                for daemon in daemons:
                    runs.stop(daemon)
        received = outbox_ids(sink.received)
    finally:
        workspace.close()
    duplicates = sum(count - 1 for count in received.values())
    print(f"\nrestarted after {restarted_at} of {MESSAGES} had arrived; {duplicates} duplicates")
    assert len(received) == MESSAGES
    assert duplicates <= POOL * DAEMONS  # a 250 whose commit the restart cut off, per connection
