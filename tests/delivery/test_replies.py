"""What a relay's answer means: pure decisions, no SMTP."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.delivery.replies import RetryPolicy, SmtpReply, enhanced_status, judge, next_attempt
from tests.conftest import NOW


@pytest.mark.parametrize(
    ("code", "text", "stage", "outcome", "hard_bounce", "relay_refusal"),
    [
        (250, "2.0.0 Ok: queued as 4F1", "data", "sent", False, False),
        (451, "4.3.0 Try again later", "rcpt", "retry", False, False),
        (452, "4.2.2 Mailbox full", "rcpt", "retry", False, False),
        (None, "SMTPServerDisconnected: Connection lost", "data", "retry", False, False),
        (None, "ConnectionRefusedError: [Errno 111]", "connect", "retry", False, True),
        (535, "5.7.8 Authentication credentials invalid", "connect", "retry", False, True),
        (530, "5.7.0 Authentication required", "mail", "retry", False, True),
        (550, "5.1.1 <bob@example.com>: Recipient address rejected", "rcpt", "failed", True, False),
        (550, "5.1.10 RESOLVER.ADR.RecipientNotFound", "rcpt", "failed", True, False),
        (550, "5.2.1 The email account is disabled", "rcpt", "failed", True, False),
        (552, "5.2.2 Mailbox full", "rcpt", "failed", False, False),
        (550, "No such user here", "rcpt", "failed", False, False),  # no enhanced code: unsure
        (554, "5.7.1 Service unavailable; client host blocked", "rcpt", "failed", False, True),
        (554, "5.6.0 Message content rejected", "data", "failed", False, False),
        (550, "5.1.1 at DATA: not about one mailbox", "data", "failed", False, False),
    ],
)
def test_a_reply_decides_the_messages_fate(
    code: int | None, text: str, stage: str, outcome: str, hard_bounce: bool, relay_refusal: bool
) -> None:
    verdict = judge(SmtpReply(code, text, stage))  # type: ignore[arg-type]
    assert (verdict.outcome, verdict.hard_bounce, verdict.relay_refusal) == (
        outcome, hard_bounce, relay_refusal,
    )  # fmt: skip


def test_enhanced_status_codes_are_read_from_the_start_of_the_text() -> None:
    assert enhanced_status("5.1.1 <bob@x>: rejected") == "5.1.1"
    assert enhanced_status("  4.7.0 greylisted") == "4.7.0"
    assert enhanced_status("5.1.10 null MX") == "5.1.10"
    assert enhanced_status("user unknown 5.1.1") is None
    assert enhanced_status("6.1.1 nonsense") is None


POLICY = RetryPolicy(timedelta(minutes=5), timedelta(hours=4), timedelta(days=3))


@given(attempts=st.integers(1, 60), seed=st.integers(0, 2**32))
def test_backoff_doubles_with_jitter_and_never_exceeds_the_longest_wait(
    attempts: int, seed: int
) -> None:
    again = next_attempt(POLICY, attempts, NOW, NOW, random.Random(seed))
    assert again is not None
    ceiling = min(timedelta(minutes=5) * 2 ** min(attempts - 1, 30), timedelta(hours=4))
    assert ceiling / 2 <= again - NOW <= ceiling


def test_a_message_older_than_the_give_up_age_is_not_retried() -> None:
    rng = random.Random(1)
    assert next_attempt(POLICY, 3, NOW, NOW + timedelta(days=2), rng) is not None
    assert next_attempt(POLICY, 30, NOW, NOW + timedelta(days=3), rng) is None
