"""Event triggers follow recording order: an event reported late still enrolls, within
`[engine] late_events`, and never twice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from mailer.campaigns.enrollment import event_candidates
from mailer.contacts.events import record_event
from mailer.store.tables import contacts, enrollments
from mailer.workspace import Workspace
from tests.campaigns.test_engine import MONDAY, at, open_shop


@pytest.fixture
def shop(tmp_path: Path, environ: dict[str, str]) -> Iterator[Workspace]:
    yield from open_shop(tmp_path, environ)


def report_cart(workspace: Workspace, occurred_at: datetime) -> None:
    """The shop reports, now, that Ada abandoned her cart at `occurred_at` (`at` in the API)."""
    with workspace.engine.begin() as connection:
        record_event(connection, "ada@example.com", "cart_abandoned", occurred_at)


def carts(workspace: Workspace) -> list[datetime]:
    """When each of Ada's cart sequences began."""
    with workspace.engine.connect() as connection:
        return list(connection.scalars(
            select(enrollments.c.entered_at)
            .join(contacts, contacts.c.id == enrollments.c.contact_id)
            .where(contacts.c.email == "ada@example.com", enrollments.c.campaign == "cart")
        ))  # fmt: skip


def test_an_event_reported_25_minutes_late_enrolls_at_the_next_tick(shop: Workspace) -> None:
    at(shop, MONDAY)
    at(shop, MONDAY + timedelta(minutes=30))  # a tick has passed the moment of the event
    report_cart(shop, MONDAY + timedelta(minutes=5))
    assert at(shop, MONDAY + timedelta(minutes=31))["enrolled"] == 1
    assert carts(shop) == [MONDAY + timedelta(minutes=5)]  # the sequence counts from the event


def test_an_event_reported_two_days_late_does_not_enroll(shop: Workspace) -> None:
    at(shop, MONDAY)
    at(shop, MONDAY + timedelta(days=2))
    report_cart(shop, MONDAY + timedelta(minutes=5))
    assert at(shop, MONDAY + timedelta(days=2, minutes=1))["enrolled"] == 0
    assert carts(shop) == []


def test_the_lateness_bound_is_a_setting(tmp_path: Path, environ: dict[str, str]) -> None:
    for shop in open_shop(tmp_path, environ, '\n[engine]\nlate_events = "3 days"\n'):
        at(shop, MONDAY)
        at(shop, MONDAY + timedelta(days=2))
        report_cart(shop, MONDAY + timedelta(minutes=5))
        assert at(shop, MONDAY + timedelta(days=2, minutes=1))["enrolled"] == 1
        assert carts(shop) == [MONDAY + timedelta(minutes=5)]


def test_a_daemon_stopped_for_days_still_enrolls_what_was_reported_on_time(
    shop: Workspace,
) -> None:
    at(shop, MONDAY)
    report_cart(shop, MONDAY + timedelta(hours=1))  # on time, while no tick runs
    assert at(shop, MONDAY + timedelta(days=3))["enrolled"] == 1


def test_a_late_event_enrolls_once_however_often_or_at_once_ticks_run(shop: Workspace) -> None:
    at(shop, MONDAY)
    at(shop, MONDAY + timedelta(minutes=30))
    report_cart(shop, MONDAY + timedelta(minutes=5))
    at(shop, MONDAY + timedelta(minutes=31))
    at(shop, MONDAY + timedelta(minutes=31))  # again
    at(shop, MONDAY + timedelta(minutes=32))  # the next tick re-reads the last one's events
    report_cart(shop, MONDAY + timedelta(minutes=20))  # a second report of the same cart
    moment = MONDAY + timedelta(minutes=33)
    threads = [threading.Thread(target=at, args=(shop, moment)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    at(shop, MONDAY + timedelta(minutes=34))
    assert carts(shop) == [MONDAY + timedelta(minutes=5)]


def test_the_event_trigger_reads_new_events_through_an_index(shop: Workspace) -> None:
    campaign = shop.settings.campaigns["cart"]
    query = event_candidates(campaign, "cart_abandoned", 10, 20, MONDAY)
    # The index holds website events only: the kind is written in the statement itself, not
    # bound, or neither planner could use it.
    assert "events.kind = 'website'" in str(query)
    with shop.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            compiled = query.compile(connection, compile_kwargs={"literal_binds": True})
            plan = " ".join(row[3] for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}"))  # fmt: skip
            assert (
                "USING INDEX ix_events_kind_name_id (kind=? AND name=? AND id>? AND id<?)" in plan
            )
        else:
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            # The import ANALYZEd a list of two: looping over its members is cheapest here,
            # never on a real list; without nested loops the plan is the one a big list gets.
            connection.execute(text("SET LOCAL enable_nestloop = off"))
            compiled = query.compile(connection, compile_kwargs={"literal_binds": True})
            plan = " ".join(row[0] for row in connection.execute(text(f"EXPLAIN {compiled}")))
            assert "ix_events_kind_name_id" in plan
            # The index's own condition is the kind: only the name and ids are searched.
            assert "Index Cond: (((name)::text = 'cart_abandoned'::text) AND (id > 10)" in plan
