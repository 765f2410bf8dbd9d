"""The sender's bounce and complaint rates over a period (returns/rates.py), as the compliance
report and `mailer doctor` show them against Gmail's, Yahoo's and SES's published limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.consent.audit import Period
from mailer.doctor.checks import bulk_sender_checklist
from mailer.returns.rates import Rates, period_rates
from mailer.returns.report import Returned
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.returns.test_effects import apply, sent


@pytest.fixture
def shop(project: Path, environ: dict[str, str], clock: FrozenClock) -> Iterator[Workspace]:
    workspace = Workspace(load_settings(project / "settings.toml", environ=environ), clock)
    yield workspace
    workspace.close()


def test_rates_count_what_came_back_in_the_period_over_what_was_sent(
    shop: Workspace, project: Path
) -> None:
    people = [f"p{n}@example.com" for n in range(200)]
    ids = list(sent(shop, project, "newsletter", people).values())
    assert apply(shop, Returned("complaint", None, feedback_type="abuse"), ids[0], b"ARF 1")
    assert apply(shop, Returned("hard", None, "5.1.1"), ids[1], b"DSN 1")
    with shop.engine.connect() as connection:
        now = period_rates(connection, Period(NOW - timedelta(days=30), None))
        before = period_rates(connection, Period(None, NOW - timedelta(days=1)))
    assert (now.sent, now.complaints, now.hard_bounces) == (200, 1, 1)
    assert now.complaint_rate == pytest.approx(0.005)
    assert now.verdict()[0] == "fail"  # 0.5% complaints: over Gmail's 0.3%
    assert "complaints 0.50% (1 of 200" in now.verdict()[1]
    assert (before.sent, before.complaints) == (0, 0) and before.verdict()[0] == "warn"
    assert now.as_dict()["thresholds"]["complaint_limit"] == 0.003


@pytest.mark.parametrize(("complaints", "hard", "status"), [
    (0, 0, "ok"), (2, 0, "warn"), (3, 0, "fail"), (0, 60, "warn"), (0, 100, "fail"),
])  # fmt: skip
def test_the_doctor_judges_the_complaint_rate_by_the_published_limits(
    shop: Workspace, complaints: int, hard: int, status: str
) -> None:
    [finding] = [
        f for f in bulk_sender_checklist(shop.settings, [], Rates(1000, complaints, hard))
        if f.name == "bulk senders: complaint rate"
    ]  # fmt: skip
    assert finding.status == status
    assert "last 30 days" in finding.detail
