"""Rate limits shared by every `mailer run` through the database (delivery/throttle.py over
store/limits.py): two workers with their own engines, on SQLite and PostgreSQL, into the real
SMTP server, on the injected clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from mailer.delivery.throttle import SHORT_WAIT
from mailer.delivery.worker import Deliverer, DeliveryReport
from mailer.metrics import REGISTRY
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.conftest import Opener
from tests.delivery.helpers import queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer

TWENTY_A_SECOND = {"DELIVERY__RATE": "20/s", "DELIVERY__BATCH_SIZE": "10"}


@pytest.fixture
def workers(open_workspace: Opener) -> Iterator[list[Deliverer]]:
    """Two workers, as two `mailer run` would be: each its own workspace and engine."""
    made = [Deliverer(open_workspace(**TWENTY_A_SECOND,
                                     DELIVERY__DOMAIN_RATES='{"slow.example" = "5/s"}'))
            for _ in range(2)]  # fmt: skip
    yield made
    for deliverer in made:
        deliverer.close()


def together(workers: list[Deliverer], after: timedelta) -> list[DeliveryReport]:
    """Both workers deliver at once, at NOW + after, each in its own thread."""
    reports: list[DeliveryReport | None] = [None] * len(workers)

    def run(index: int) -> None:
        reports[index] = workers[index].deliver(NOW + after)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(report is not None for report in reports), "a worker failed"
    return [report for report in reports if report is not None]


def held_back(limit: str) -> float:
    return REGISTRY.get_sample_value("mailer_rate_holds_total", {"limit": limit}) or 0.0


def waited(limit: str) -> float:
    return REGISTRY.get_sample_value("mailer_rate_wait_seconds_total", {"limit": limit}) or 0.0


def queue(workspace: Workspace, project: Path, count: int, domain: str = "example.com") -> None:
    queue_welcome(workspace, project, *(f"p{n}@{domain},P{n}" for n in range(count)))


def test_a_budget_spent_by_one_worker_is_spent_for_the_other(
    workers: list[Deliverer], project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    first, second = workers
    queue(first.workspace, project, 60)
    holds, waits = held_back("send"), waited("send")
    assert first.deliver(NOW).sent == 20  # a second's worth of burst
    # The next token was under a second away: waited for in line once (the clock stands
    # still in this test, so the messages after it are held back instead).
    assert 0 < waited("send") - waits <= SHORT_WAIT
    assert second.deliver(NOW).sent == 0  # same instant, its own engine: nothing left
    waiting = [row for row in rows(first.workspace).values() if row["status"] == "queued"]
    assert len(waiting) == 40 and {row["reason"] for row in waiting} <= {"rate limit", None}
    assert all(row["attempts"] == 0 for row in waiting)  # held back is not an attempt
    held = [row["send_after"] for row in waiting if row["reason"] == "rate limit"]
    assert held and all(NOW < at <= NOW + timedelta(seconds=1) for at in held)  # type: ignore[operator]
    assert held_back("send") - holds == len(held)  # /metrics counts each message held back
    for second_ in (1, 2):  # both at once: still 20 a second between them
        assert sum(report.sent for report in together(workers, timedelta(seconds=second_))) == 20
    assert len(smtp_server.received) == 60
    assert {row["status"] for row in rows(first.workspace).values()} == {"sent"}


def test_a_domain_budget_holds_across_workers_and_other_domains_go_on(
    workers: list[Deliverer], project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    first, _ = workers
    holds, overall = held_back("send:slow.example"), held_back("send")
    queue_welcome(first.workspace, project, *(f"s{n}@slow.example,S{n}" for n in range(12)),
                  *(f"f{n}@fast.example,F{n}" for n in range(12)))  # fmt: skip
    assert sum(report.sent for report in together(workers, timedelta(0))) == 5 + 12
    slow = [r for r in smtp_server.received if r.recipient.endswith("@slow.example")]
    assert len(slow) == 5  # 5 a second between both workers; fast.example all at once
    assert held_back("send:slow.example") - holds == 7 and held_back("send") == overall
    for second_, expected in ((1, 10), (2, 12)):
        together(workers, timedelta(seconds=second_))
        slow = [r for r in smtp_server.received if r.recipient.endswith("@slow.example")]
        assert len(slow) == expected
    assert len(smtp_server.received) == 24


def test_daemons_set_to_different_rates_share_the_lower_one_and_say_so(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    fast, slow = (Deliverer(open_workspace(DELIVERY__RATE=rate, DELIVERY__BATCH_SIZE="10"))
                  for rate in ("20/s", "5/s"))  # fmt: skip
    try:
        queue(fast.workspace, project, 40)
        assert slow.deliver(NOW).sent == 5  # its burst; from now on 5 a second holds for both
        assert fast.deliver(NOW).sent == 0
        assert REGISTRY.get_sample_value("mailer_rate_limit_per_second", {"limit": "send"}) == 5
        with caplog.at_level(logging.WARNING, logger="mailer"):
            for second_ in (1, 2):
                sent = sum(
                    report.sent for report in together([fast, slow], timedelta(seconds=second_))
                )
                assert sent == 5  # not 20: the faster daemon is held to the slower one's rate
        assert caplog.text.count("rate limit: this process is set to 20/s, but another "
                                 "process on this database to 5/s") == 1  # fmt: skip
        assert len(smtp_server.received) == 15
    finally:
        fast.close()
        slow.close()
