"""A pixel fetched again within a minute of the message's last open (rule 8) is counted in
event_rollups, not stored as a row: the chain holds across batches and days, and the report
counts the fetches among the machines' opens, on the day each happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from mailer.reports.metrics import build_report
from mailer.store.rollups import REFETCHES, utc_days
from mailer.store.tables import event_rollups
from mailer.workspace import Workspace
from tests.helpers import refetches
from tests.tracking.test_recording import Sent, hit, message, stored, write


def counted(workspace: Workspace) -> list[tuple[str, int, datetime]]:
    """The refetch counts: (UTC day, how many, the latest)."""
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(event_rollups.c.day, event_rollups.c.events, event_rollups.c.last_at)
            .where(event_rollups.c.kind == REFETCHES).order_by(event_rollups.c.day)
        ).all()  # fmt: skip
    return [(day, n, last.astimezone(UTC)) for day, n, last in rows]


def report(workspace: Workspace, now: datetime) -> dict[str, Any]:
    with workspace.engine.connect() as connection:
        return build_report(connection, workspace.settings, campaign="welcome", now=now)


def test_a_chain_longer_than_a_minute_is_one_open_batch_after_batch(sent: Sent) -> None:
    """Each fetch 40 s after the last, five minutes long, each in a batch of its own and no
    writer's memory: only the count tells the next fetch that the chain went on."""
    workspace, _ = sent
    key, sent_at, _ = message(workspace)
    first = sent_at + timedelta(hours=1)
    fetches = [first + timedelta(seconds=40 * n) for n in range(8)]
    for at in fetches:
        write(workspace, workspace.settings, hit("open", key, at))
    assert stored(workspace) == [("open", None)]
    assert counted(workspace) == [(first.astimezone(UTC).date().isoformat(), 7,
                                   fetches[-1].astimezone(UTC))]  # fmt: skip
    write(workspace, workspace.settings, hit("open", key, fetches[-1] + timedelta(seconds=61)))
    assert stored(workspace) == [("open", None), ("open", None)]  # a minute later: a reopen
    steps = report(workspace, first + timedelta(days=1))["campaigns"][0]["steps"]
    [step] = [step for step in steps if step["name"] == "hello"]
    totals = step["totals"]
    assert (totals["unique_opens"], totals["total_opens"], totals["machine_opens"]) == (1, 2, 7)


def test_a_fetch_written_after_a_later_one_joins_its_chain(sent: Sent) -> None:
    """Another instance's batch can reach the database after this one's: its fetch, older than
    the latest counted, falls inside the chain (each link under a minute): a refetch."""
    workspace, _ = sent
    key, sent_at, _ = message(workspace)
    first = sent_at + timedelta(hours=1)
    for seconds in (0, 50, 100):
        write(workspace, workspace.settings, hit("open", key, first + timedelta(seconds=seconds)))
    write(workspace, workspace.settings, hit("open", key, first + timedelta(seconds=75)))
    assert stored(workspace) == [("open", None)]  # 75 s after the open, 25 s after a refetch
    assert refetches(workspace) == 3
    assert counted(workspace)[0][2] == (first + timedelta(seconds=100)).astimezone(UTC)


def test_refetches_across_midnight_count_on_the_day_each_happened(sent: Sent) -> None:
    workspace, _ = sent
    key, sent_at, _ = message(workspace)
    later = (sent_at + timedelta(days=1)).astimezone(UTC)
    midnight = datetime(later.year, later.month, later.day, tzinfo=UTC)
    opened = midnight - timedelta(seconds=50)
    write(workspace, workspace.settings, hit("open", key, opened),
          hit("open", key, opened + timedelta(seconds=30)))  # fmt: skip
    write(workspace, workspace.settings, hit("open", key, midnight + timedelta(seconds=20)))
    days = [opened.date().isoformat(), midnight.date().isoformat()]
    assert counted(workspace) == [(days[0], 1, opened + timedelta(seconds=30)),
                                  (days[1], 1, midnight + timedelta(seconds=20))]  # fmt: skip
    timeline = report(workspace, midnight + timedelta(days=1))["campaigns"][0]["timeline"]
    assert [(day["date"], day["opens"], day["machine_opens"]) for day in timeline] == [
        (days[0], 1, 1), (days[1], 0, 1)]  # fmt: skip


def test_the_days_read_for_a_batch_are_every_day_it_spans() -> None:
    """A batch held back by an outage can span days: the counts of each are read."""
    start = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    assert utc_days(start, start + timedelta(days=1, minutes=2)) == [
        "2026-12-01", "2026-12-02", "2026-12-03"]  # fmt: skip
    assert utc_days(start - timedelta(hours=1), start) == ["2026-12-01"]
