"""mailer/metrics.py: results counted per campaign from a closed set of labels, tick durations,
and the outbox's queues counted in the database (SQLite and PostgreSQL) when scraped."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from mailer.delivery.pauses import pause
from mailer.metrics import (
    REGISTRY,
    Exposition,
    OutboxQueues,
    count_result,
    expect_campaigns,
    timed_tick,
)
from mailer.store.tables import outbox
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import queue_welcome


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_result_is_counted_under_its_campaign_and_a_hard_bounce_as_bounced(
    workspace: Workspace,
) -> None:
    settings = workspace.settings
    sent = sample("mailer_messages_total", campaign="welcome", result="sent")
    bounced = sample("mailer_messages_total", campaign="welcome", result="bounced")
    count_result(settings, "welcome", "sent", bounced=False)
    count_result(settings, "welcome", "failed", bounced=True)
    assert sample("mailer_messages_total", campaign="welcome", result="sent") == sent + 1
    assert sample("mailer_messages_total", campaign="welcome", result="bounced") == bounced + 1


def test_a_campaign_not_in_settings_is_counted_as_other_and_adds_no_series(
    workspace: Workspace,
) -> None:
    other = sample("mailer_messages_total", campaign="other", result="sent")
    count_result(workspace.settings, 'gone"\n{x="1"}', "sent", bounced=False)
    count_result(workspace.settings, None, "sent", bounced=False)
    assert sample("mailer_messages_total", campaign="other", result="sent") == other + 2
    assert "gone" not in Exposition([]).text().decode()


def test_every_campaign_and_result_is_exposed_at_zero_before_the_first_message(
    workspace: Workspace,
) -> None:
    expect_campaigns(workspace.settings)
    families = {f.name: f for f in text_string_to_metric_families(Exposition([]).text().decode())}
    labels = {
        (s.labels["campaign"], s.labels["result"])
        for s in families["mailer_messages"].samples
        if s.name == "mailer_messages_total"
    }
    for result in ("sent", "deferred", "failed", "bounced", "skipped", "released"):
        assert ("welcome", result) in labels


def test_a_tick_is_timed_even_when_it_raises() -> None:
    before = sample("mailer_tick_seconds_count")

    @timed_tick
    def failing_tick() -> None:
        raise RuntimeError("database away")

    @timed_tick
    def tick() -> int:
        return 3

    assert tick() == 3
    with pytest.raises(RuntimeError):
        failing_tick()
    assert sample("mailer_tick_seconds_count") == before + 2


def test_the_queues_are_counted_in_the_database_when_scraped(
    workspace: Workspace, project: Path
) -> None:
    queue_welcome(workspace, project, "ada@example.com", "bob@example.com", "cy@example.com")
    queues = Exposition([OutboxQueues(workspace.engine, workspace.settings)])

    def gauges() -> dict[tuple[str, str], float]:
        return {
            (s.name, next(iter(s.labels.values()))): s.value
            for f in text_string_to_metric_families(queues.text().decode())
            for s in f.samples
            if s.name in ("mailer_outbox_messages", "mailer_campaign_paused")
        }

    first = gauges()
    assert first[("mailer_outbox_messages", "queued")] == 3
    assert first[("mailer_outbox_messages", "deferred")] == 0
    assert first[("mailer_campaign_paused", "welcome")] == 0
    with workspace.engine.begin() as connection:
        connection.execute(
            update(outbox)
            .where(outbox.c.id == 1)
            .values(status="deferred", send_after=NOW + timedelta(hours=1))
        )
        pause(connection, workspace.settings, "welcome", "by hand", NOW)
    later = gauges()
    assert later[("mailer_outbox_messages", "queued")] == 2
    assert later[("mailer_outbox_messages", "deferred")] == 1
    assert later[("mailer_campaign_paused", "welcome")] == 1
