"""Circuit breakers (returns/breakers.py): the complaint and hard bounce rates over the sliding
window, per campaign and for the sender; a warning in the log and /healthz, a pause past the
stop threshold. Thresholds are set low in settings so a hundred messages show them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.delivery.pauses import paused_campaigns
from mailer.errors import SettingsError
from mailer.metrics import Exposition
from mailer.returns.breakers import ReturnGauges, readings
from mailer.returns.report import Returned
from mailer.tracking.health import EventBacklog, reasons
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.returns.test_effects import apply, sent

NURTURE = """
[campaigns.nurture]
kind = "sequence"
list = "leads"
trigger = 'joins list "leads"'
enroll_existing = true

[[campaigns.nurture.steps]]
name = "intro"
template = "welcome/2"
subject = "Meet the roasters"
"""
POLICY = {"MAILER_RETURNS__BREAKER_MINIMUM": "100", "MAILER_RETURNS__COMPLAINT_WARN": "1%",
          "MAILER_RETURNS__COMPLAINT_STOP": "2%", "MAILER_RETURNS__HARD_BOUNCE_WARN": "3%",
          "MAILER_RETURNS__HARD_BOUNCE_STOP": "5%"}  # fmt: skip
COMPLAINT = Returned("complaint", None, feedback_type="abuse")
HARD = Returned("hard", None, "5.1.1")


@pytest.fixture
def shop(project: Path, environ: dict[str, str], clock: FrozenClock) -> Iterator[Workspace]:
    """Two campaigns (welcome on the newsletter, nurture on leads) under the test policy."""
    with (project / "settings.toml").open("a") as settings_file:
        settings_file.write(NURTURE)
    settings = load_settings(project / "settings.toml", environ=environ | POLICY)
    workspace = Workspace(settings, clock)
    yield workspace
    workspace.close()


def people(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n}@example.com" for n in range(count)]


def paused(workspace: Workspace) -> dict[str, str]:
    with workspace.engine.connect() as connection:
        return paused_campaigns(connection)


def test_complaint_rate_past_warning_is_logged_and_shown_in_healthz(
    shop: Workspace, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = list(sent(shop, project, "newsletter", people("n", 100)).values())
    with caplog.at_level(logging.WARNING, logger="mailer"):
        assert apply(shop, COMPLAINT, ids[0], b"ARF 1").startswith("complaint: withdrawn")
    assert "campaign welcome: complaint rate 1.00% over 1d (warn at 1.00%): 1 of 100" in (
        caplog.text)  # fmt: skip
    assert paused(shop) == {}
    with shop.engine.connect() as connection:
        found = readings(connection, shop.settings, NOW)
    backlog = EventBacklog(0, 100, None, timedelta(seconds=1), None)
    assert [r.as_dict() for r in reasons(None, {}, backlog, NOW, found)] == [
        {"check": "returns_rate_high", "message": "the sender: complaint rate 1.00% over 1d "
         "(warn at 1.00%): 1 of 100 messages sent"},
        {"check": "returns_rate_high", "campaign": "welcome", "message": "campaign welcome: "
         "complaint rate 1.00% over 1d (warn at 1.00%): 1 of 100 messages sent"},
    ]  # fmt: skip


def test_complaint_rate_past_stop_pauses_the_campaign_with_the_reason(
    shop: Workspace, project: Path
) -> None:
    ids = list(sent(shop, project, "newsletter", people("n", 100)).values())
    sent(shop, project, "leads", people("l", 100))  # the sender: 1%, a warning
    apply(shop, COMPLAINT, ids[0], b"ARF 1")
    assert paused(shop) == {}
    apply(shop, COMPLAINT, ids[1], b"ARF 2")
    assert paused(shop) == {
        "welcome": "complaint rate 2.00% over 1d (stop at 2.00%): 2 of 100 messages sent"
    }
    with shop.engine.connect() as connection:
        found = readings(connection, shop.settings, NOW)
    assert [(r.campaign, r.level) for r in found] == [(None, "warn"), ("welcome", "stop")]
    # Health names the pause once (as a paused campaign) and the sender's warning.
    backlog = EventBacklog(0, 100, None, timedelta(seconds=1), None)
    assert [r.check for r in reasons(None, paused(shop), backlog, NOW, found)] == [
        "campaign_paused", "returns_rate_high"]  # fmt: skip


def test_hard_bounce_rate_of_the_sender_pauses_every_campaign(
    shop: Workspace, project: Path
) -> None:
    """Two campaigns each under breaker_minimum: only the sender's rate is judged."""
    news = list(sent(shop, project, "newsletter", people("n", 60)).values())
    leads = list(sent(shop, project, "leads", people("l", 60)).values())
    for n, outbox_id in enumerate([*news[:3], *leads[:3]]):
        apply(shop, HARD, outbox_id, f"DSN {n}".encode())
        assert paused(shop) == {} or n == 5
    reason = "the sender's hard bounce rate 5.00% over 1d (stop at 5.00%): 6 of 120 messages sent"
    assert paused(shop) == {"welcome": reason, "nurture": reason}


def test_the_window_slides_and_a_small_sample_is_not_judged(shop: Workspace, project: Path) -> None:
    ids = list(sent(shop, project, "newsletter", people("n", 100)).values())
    apply(shop, COMPLAINT, ids[0], b"ARF 1")
    with shop.engine.connect() as connection:
        assert len(readings(connection, shop.settings, NOW)) == 2
        # A day on, neither the complaint nor the messages are in the window.
        assert readings(connection, shop.settings, NOW + timedelta(days=1, seconds=1)) == []
    # 99 sent (under breaker_minimum): three complaints among them pause nothing.
    later = NOW + timedelta(days=2)
    more = list(sent(shop, project, "leads", people("l", 99), at=later).values())
    for n in range(3):
        apply(shop, COMPLAINT, more[n], f"ARF l{n}".encode(), later)
    assert paused(shop) == {}


def test_thresholds_read_as_percentages_and_a_warning_above_its_stop_is_refused(
    project: Path, environ: dict[str, str]
) -> None:
    settings = load_settings(project / "settings.toml", environ=environ | POLICY)
    assert (settings.returns.complaint_warn, settings.returns.hard_bounce_stop) == (0.01, 0.05)
    defaults = load_settings(project / "settings.toml", environ=environ).returns
    assert (defaults.complaint_warn, defaults.complaint_stop) == (0.001, 0.003)
    assert (defaults.hard_bounce_warn, defaults.hard_bounce_stop) == (0.05, 0.10)
    with pytest.raises(SettingsError, match="complaint_warn must not be above complaint_stop"):
        load_settings(
            project / "settings.toml",
            environ=environ
            | {"MAILER_RETURNS__COMPLAINT_WARN": "1%", "MAILER_RETURNS__COMPLAINT_STOP": "0.5%"},
        )
    with pytest.raises(SettingsError, match="is not a rate"):
        load_settings(
            project / "settings.toml", environ=environ | {"MAILER_RETURNS__COMPLAINT_STOP": "lots"}
        )


def test_the_rates_the_breakers_judge_are_in_metrics(shop: Workspace, project: Path) -> None:
    """What /metrics shows is what the breakers read: per campaign of settings and for the
    whole sender (campaign label empty), the rates over the window and the messages sent."""
    news = list(sent(shop, project, "newsletter", people("n", 100)).values())
    sent(shop, project, "leads", people("l", 50))
    apply(shop, COMPLAINT, news[0], b"ARF 1")
    for n, outbox_id in enumerate(news[1:3]):
        apply(shop, HARD, outbox_id, f"DSN {n}".encode())
    exposition = Exposition([ReturnGauges(shop.engine, shop.settings, shop.clock)])

    def scraped() -> dict[tuple[str, ...], float]:
        return {(s.name, *s.labels.values()): s.value
                for family in text_string_to_metric_families(exposition.text().decode())
                for s in family.samples if s.name.startswith("mailer_returns_")}  # fmt: skip

    assert scraped() == {
        ("mailer_returns_rate", "", "complaint"): 1 / 150,
        ("mailer_returns_rate", "", "hard_bounce"): 2 / 150,
        ("mailer_returns_rate", "welcome", "complaint"): 1 / 100,
        ("mailer_returns_rate", "welcome", "hard_bounce"): 2 / 100,
        ("mailer_returns_rate", "nurture", "complaint"): 0.0,
        ("mailer_returns_rate", "nurture", "hard_bounce"): 0.0,
        ("mailer_returns_sent", ""): 150, ("mailer_returns_sent", "welcome"): 100,
        ("mailer_returns_sent", "nurture"): 50,
    }  # fmt: skip
    shop.clock.advance(shop.settings.returns.breaker_window)  # type: ignore[attr-defined]
    assert {key: value for key, value in scraped().items() if value} == {}  # the window slid
