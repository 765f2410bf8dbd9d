"""Lead score (decaying, epoch-scaled) and lifecycle stages, updated as activity happens."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from mailer.campaigns.activity import record_activity
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.contacts.scoring import growth, score_at
from mailer.store.tables import contacts
from mailer.workspace import Workspace
from tests.campaigns.test_engine import MONDAY, open_shop

SCORED = """
[scoring]
half_life = "30 days"
points = { viewed_product = 2, purchased = 20 }

[lifecycle]
stages = ["lead", "prospect", "customer"]
rules = { prospect = "score >= 5", customer = 'event "purchased"' }
"""


@pytest.fixture
def scored(tmp_path: Path, environ: dict[str, str]) -> Iterator[Workspace]:
    yield from open_shop(tmp_path, environ, SCORED)


def act(workspace: Workspace, email: str, name: str, at: datetime) -> None:
    with workspace.engine.begin() as connection:
        record_activity(connection, workspace.settings, email, name, at)


def who(workspace: Workspace, source: str, now: datetime) -> set[str]:
    condition = SegmentCompiler.for_settings(workspace.settings, now).where(parse_segment(source))
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(contacts.c.email).where(condition))
        return {row.email.split("@")[0] for row in rows}


@given(st.floats(min_value=-1000, max_value=1000), st.integers(0, 3650))
def test_scaling_to_the_epoch_is_exact_decay(points: float, days: int) -> None:
    half_life = timedelta(days=30)
    then = MONDAY
    later = then + timedelta(days=days)
    stored = points * growth(then, half_life)
    assert score_at(stored, later, half_life) == pytest.approx(points * 0.5 ** (days / 30))


def test_scores_add_up_and_halve_every_half_life(scored: Workspace) -> None:
    for _ in range(3):
        act(scored, "ada@example.com", "viewed_product", MONDAY)  # 6 points
    act(scored, "bob@example.com", "viewed_product", MONDAY)  # 2 points
    assert who(scored, "score >= 6", MONDAY) == {"ada"}
    assert who(scored, "score > 1", MONDAY) == {"ada", "bob"}
    month = MONDAY + timedelta(days=30)
    assert who(scored, "score >= 3", month) == {"ada"}  # 6 -> 3
    assert who(scored, "score > 3", month) == set()
    assert who(scored, "score < 2", month) == {"bob", "ken"}  # ken never scored: 0


def test_stages_move_up_as_rules_hold_and_never_down(scored: Workspace) -> None:
    assert who(scored, 'stage = "lead"', MONDAY) == {"ada", "bob", "ken"}
    for _ in range(3):
        act(scored, "ada@example.com", "viewed_product", MONDAY)
    assert who(scored, 'stage = "prospect"', MONDAY) == {"ada"}
    act(scored, "ada@example.com", "purchased", MONDAY + timedelta(hours=1))
    assert who(scored, 'stage = "customer"', MONDAY) == {"ada"}
    # a year later the score has decayed far below 5: she is still a customer
    act(scored, "ada@example.com", "viewed_product", MONDAY + timedelta(days=365))
    assert who(scored, 'stage = "customer"', MONDAY + timedelta(days=365)) == {"ada"}


def test_a_too_short_half_life_and_an_unknown_stage_are_refused(project: Path) -> None:
    from mailer.config import load_settings
    from mailer.errors import SettingsError

    path = project / "settings.toml"
    original = path.read_text()
    path.write_text(original + '\n[scoring]\nhalf_life = "1 day"\n')
    with pytest.raises(SettingsError, match=r"scoring\.half_life: must be at least 14 days"):
        load_settings(path, environ={})
    path.write_text(original + '\n[lifecycle]\nstages = ["lead"]\nrules = { vip = "score > 1" }\n')
    with pytest.raises(SettingsError, match=r"lifecycle\.rules\.vip: not one of lifecycle\.stages"):
        load_settings(path, environ={})


def test_scores_survive_between_ticks_without_rewrites(scored: Workspace) -> None:
    act(scored, "ada@example.com", "purchased", MONDAY)
    with scored.engine.connect() as connection:
        stored = connection.scalar(select(contacts.c.score_epoch)
                                   .where(contacts.c.email == "ada@example.com"))  # fmt: skip
    assert score_at(stored, MONDAY, timedelta(days=30)) == pytest.approx(20)
    assert score_at(stored, MONDAY + timedelta(days=60), timedelta(days=30)) == pytest.approx(5)
    assert datetime(2026, 1, 1, tzinfo=UTC) < MONDAY


RULES = (
    SCORED.replace("points = {", "rules = { 'orders >= 3' = 10 }\npoints = {")
    + """
[attributes]
orders = "integer"
"""
)


def test_score_rules_award_points_once_when_first_met(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    from mailer.campaigns.engine import tick
    from tests.conftest import write_csv
    from tests.helpers import run_import

    for shop in open_shop(tmp_path, environ, RULES):
        run_import(shop, write_csv(tmp_path / "o.csv", "email,orders\nada@example.com,5\n"
                                   "bob@example.com,1\n"), "newsletter")  # fmt: skip
        tick(shop.engine, shop.settings, MONDAY)
        tick(shop.engine, shop.settings, MONDAY + timedelta(minutes=5))  # not twice
        assert who(shop, "score >= 10", MONDAY) == {"ada"}
        assert who(shop, "score > 10", MONDAY) == set()
        shop.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
        run_import(shop, write_csv(tmp_path / "p.csv", "email,orders\nbob@example.com,4\n"),
                   "newsletter")  # fmt: skip
        tick(shop.engine, shop.settings, MONDAY + timedelta(hours=2))
        assert who(shop, "score >= 9", MONDAY + timedelta(hours=2)) == {"ada", "bob"}
