"""Token buckets over explicit time: no waiting."""

from __future__ import annotations

import pytest

from mailer.config import Delivery
from mailer.delivery.throttle import Throttle, TokenBucket


def test_a_bucket_gives_its_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(rate=2.0, burst=2.0)
    assert [bucket.take(0.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # reserved: usable half a second later
    assert bucket.wait(0.0) == pytest.approx(1.0)  # the next one is a second away
    assert bucket.wait(1.0) == 0.0
    assert bucket.take(10.0) == 0.0  # refilled, but never above the burst
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) > 0


def test_domains_have_their_own_limits_and_share_the_overall_one() -> None:
    throttle = Throttle(rate=100.0, domain_rates={"Gmail.com": 1.0})
    assert throttle.domain_wait("a@gmail.com", 0.0) == 0.0
    throttle.take("a@gmail.com", 0.0)
    assert throttle.domain_wait("b@GMAIL.com", 0.0) == pytest.approx(1.0)
    assert throttle.domain_wait("c@outlook.com", 0.0) == 0.0
    assert throttle.domain_wait("b@gmail.com", 1.0) == 0.0
    assert [throttle.take("x@outlook.com", 0.0) for _ in range(99)][-1] == 0.0
    assert throttle.take("x@outlook.com", 0.0) == pytest.approx(0.01)  # the overall bucket


@pytest.mark.parametrize(
    ("text", "per_second"), [("100/s", 100.0), ("3000/min", 50.0), ("36000/h", 10.0), (5, 5.0)]
)
def test_rates_are_written_per_second_minute_or_hour(text: object, per_second: float) -> None:
    assert Delivery.model_validate({"rate": text}).rate == per_second


@pytest.mark.parametrize("text", ["fast", "0/s", "10/day", -1])
def test_a_rate_that_means_nothing_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        Delivery.model_validate({"rate": text})
