"""The budgets of settings [delivery], without a server. The buckets' arithmetic:
tests/store/test_limits.py; shared across processes: tests/delivery/test_shared_throttle.py."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from mailer.config import Delivery
from mailer.delivery.throttle import Throttle, budget


def test_a_process_takes_a_tenth_of_a_seconds_worth_of_tokens_a_round_trip() -> None:
    assert budget("send", 100.0, "rate limit").chunk == 10
    assert budget("send", 20.0, "rate limit").chunk == 2
    assert budget("send", 0.5, "rate limit").chunk == 1  # at least one
    assert budget("send", 0.5, "rate limit").limit.burst == 1.0  # a second's worth, at least 1


def test_domains_have_their_own_budgets_and_share_the_overall_one() -> None:
    throttle = Throttle(create_engine("sqlite://"), rate=100.0,
                        domain_rates={"Gmail.com": 1.0})  # fmt: skip
    assert [b.bucket for b in throttle.budgets("a@GMAIL.com")] == ["send:gmail.com", "send"]
    assert [b.reason for b in throttle.budgets("a@gmail.com")] == [
        "rate limit for gmail.com", "rate limit"]  # fmt: skip
    assert [b.bucket for b in throttle.budgets("x@outlook.com")] == ["send"]
    assert Throttle(create_engine("sqlite://"), None, {}).budgets("x@outlook.com") == []


@pytest.mark.parametrize(
    ("text", "per_second"), [("100/s", 100.0), ("3000/min", 50.0), ("36000/h", 10.0), (5, 5.0)]
)
def test_rates_are_written_per_second_minute_or_hour(text: object, per_second: float) -> None:
    assert Delivery.model_validate({"rate": text}).rate == per_second


@pytest.mark.parametrize("text", ["fast", "0/s", "10/day", -1])
def test_a_rate_that_means_nothing_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        Delivery.model_validate({"rate": text})
