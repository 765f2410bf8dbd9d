"""Two tracking instances writing for the same contacts at once, each with its own engine (two
processes behind a load balancer): /events batches and batches of opens in opposite orders
neither deadlock nor lose anything; a deadlock's victim is run again and logged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.exc import OperationalError

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.locking import ATTEMPTS, retried
from mailer.store.tables import contacts, events, outbox, trigger_cursors
from mailer.tracking.hits import Hit
from mailer.tracking.recording import record_hits
from mailer.tracking.website import WebsiteEvent, record_events
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.helpers import count, opens_recorded, run_import

PEOPLE = 150
ROUNDS = 3
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")  # fmt: skip
SCORING = """
[scoring]
points = { opened = 1, purchased = 5 }

[lifecycle]
stages = ["subscriber", "lead"]
rules = { lead = "score > 3" }
"""


@pytest.fixture
def two(project: Path, environ: dict[str, str], database_url: str,
        tmp_path: Path) -> Iterator[tuple[Workspace, Workspace]]:  # fmt: skip
    """Two workspaces (two engines, as two instances have) on one database, with PEOPLE
    contacts on the newsletter, each sent the welcome message an hour ago."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: two writers cannot deadlock")
    settings_file = project / "settings.toml"
    settings_file.write_text(settings_file.read_text() + SCORING)
    settings = load_settings(settings_file, environ=environ)
    first, second = Workspace(settings, FrozenClock(NOW)), Workspace(settings, FrozenClock(NOW))
    rows = "".join(f"p{n}@example.com,P{n},2026-11-01T09:00Z,2026-11-01T09:05Z\n"
                   for n in range(PEOPLE))  # fmt: skip
    run_import(first, write_csv(tmp_path / "people.csv",
                                "email,first_name,consent_at,consent_confirmed_at\n" + rows),
               "newsletter")  # fmt: skip
    assert tick(first.engine, settings, NOW).queued == PEOPLE
    with first.engine.begin() as connection:  # as if delivered
        connection.execute(update(outbox).values(status="sent", sent_at=NOW - timedelta(hours=1)))
    yield first, second
    first.close()
    second.close()


def at_once(*work: Callable[[], Any]) -> list[BaseException]:
    """Run each in a thread of its own, started together; the exceptions they raised."""
    failures: list[BaseException] = []
    together = threading.Barrier(len(work))

    def run(job: Callable[[], Any]) -> None:
        together.wait()
        try:
            job()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def contact_ids(workspace: Workspace) -> list[int]:
    with workspace.engine.connect() as connection:
        return list(connection.scalars(select(contacts.c.id).order_by(contacts.c.id)))


def test_two_instances_posting_events_for_the_same_contacts_in_opposite_orders_both_succeed(
    two: tuple[Workspace, Workspace],
) -> None:
    first, second = two
    ids = contact_ids(first)
    batch = [WebsiteEvent.model_validate({"contact_id": i, "event": "purchased",
                                          "at": NOW.isoformat()}) for i in ids]  # fmt: skip
    for _ in range(ROUNDS):
        failures = at_once(lambda: record_events(first, batch),
                           lambda: record_events(second, batch[::-1]))  # fmt: skip
        assert failures == []
    assert count(first, events, events.c.kind == "website") == 2 * ROUNDS * PEOPLE
    with first.engine.connect() as connection:
        scores = set(connection.scalars(select(contacts.c.score_epoch)))
        stages = set(connection.scalars(select(contacts.c.stage)))
    assert len(scores) == 1  # every contact got all 2 * ROUNDS events' points
    assert stages == {"lead"}


def test_two_instances_writing_opens_for_the_same_contacts_in_opposite_orders_both_succeed(
    two: tuple[Workspace, Workspace],
) -> None:
    first, second = two
    with first.engine.connect() as connection:
        messages = list(connection.execute(select(outbox.c.id).order_by(outbox.c.contact_id)))

    def opens(order: Sequence[Any], round_: int) -> list[Hit]:
        # Points are added in the order the opens happened: opposite orders in the two batches.
        return [Hit("open", f"m{row.id}", None, NOW + timedelta(minutes=round_, seconds=n),
                    CHROME, f"198.51.100.{n % 200 + 1}", "GET")
                for n, row in enumerate(order)]  # fmt: skip

    def write(workspace: Workspace, hits: list[Hit]) -> None:
        with workspace.engine.begin() as connection:
            record_hits(connection, workspace.settings, workspace.key, hits)

    for round_ in range(ROUNDS):
        ascending, descending = opens(messages, round_), opens(messages[::-1], round_)
        failures = at_once(partial(write, first, ascending), partial(write, second, descending))
        assert failures == []
    assert opens_recorded(first) == 2 * ROUNDS * PEOPLE  # stored, or counted as refetches


def test_a_deadlock_victim_is_run_again_in_a_new_transaction_and_logged(
    two: tuple[Workspace, Workspace], caplog: pytest.LogCaptureFixture
) -> None:
    first, _ = two
    attempts: list[int] = []

    def work(connection: Connection) -> str:
        attempts.append(1)
        connection.execute(insert(trigger_cursors).values(campaign=f"try {len(attempts)}",
                                                          seen_until=NOW))  # fmt: skip
        if len(attempts) < 3:  # PostgreSQL itself answers 40P01, as to a deadlock's victim
            connection.execute(text("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' "
                                    "USING ERRCODE = 'deadlock_detected'; END $$"))  # fmt: skip
        return "done"

    with caplog.at_level(logging.WARNING, logger="mailer"):
        assert retried(first.engine, work, "events", 7) == "done"
    assert len(attempts) == 3
    retries = [r for r in caplog.records if r.getMessage() == "deadlock: trying again"]
    assert [(r.__dict__["contacts"], r.__dict__["attempt"]) for r in retries] == [(7, 1), (7, 2)]
    assert retries[0].__dict__["reason"] == "deadlock detected"
    with first.engine.connect() as connection:  # the victims' writes were undone
        tries = select(trigger_cursors.c.campaign).where(trigger_cursors.c.campaign.like("try %"))
        kept = list(connection.scalars(tries))
    assert kept == ["try 3"]


def test_a_deadlock_that_keeps_coming_back_is_given_up_and_logged_as_an_error(
    two: tuple[Workspace, Workspace], caplog: pytest.LogCaptureFixture
) -> None:
    first, _ = two
    calls = []

    def work(connection: Connection) -> None:
        calls.append(1)
        connection.execute(text("DO $$ BEGIN RAISE EXCEPTION 'could not serialize access' "
                                "USING ERRCODE = 'serialization_failure'; END $$"))  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="mailer"), pytest.raises(OperationalError):
        retried(first.engine, work, "opens and clicks", 3)
    assert len(calls) == ATTEMPTS
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "deadlock: gave up"]  # fmt: skip


def test_other_database_errors_are_not_retried(two: tuple[Workspace, Workspace]) -> None:
    first, _ = two
    calls = []

    def work(connection: Connection) -> None:
        calls.append(1)
        connection.execute(select(func.nosuchfunction()))

    with pytest.raises(Exception, match="nosuchfunction"):
        retried(first.engine, work, "events", 1)
    assert calls == [1]
