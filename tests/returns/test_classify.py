"""Every fixture of returned mail (tests/returns/fixtures, hand-written in the shapes real MTAs
and feedback loops produce) classified: what it is, who failed or complained, the RFC 3463
code, our VERP token and our Message-ID."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.returns.classify import classify
from mailer.returns.report import CLASSIFICATIONS
from mailer.tokens import TokenKeys, sign
from tests.conftest import SECRET

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = TokenKeys(SECRET.encode())
# The fixtures carry our real bounce tokens for outbox rows 1, 2 and 3 under the test secret.
T1, T2, T3 = (sign(KEYS, "bounce", f"m{n}") for n in (1, 2, 3))
M1, M2, M3 = (
    "m1.0a1b2c3d4e5f@acme.example",
    "m2.1b2c3d4e5f60@acme.example",
    "m3.2c3d4e5f6071@acme.example",
)

# file: (classification, recipient, status_code, verp_token, original_message_id, feedback_type)
EXPECTED = {
    "postfix_user_unknown.eml": ("hard", "ada@example.com", "5.1.1", T1, M1, None),
    "exim_plain_failure.eml": ("hard", "bob@example.org", "5.1.1", T2, M2, None),
    "office365_recipient_not_found.eml": ("hard", "cy@example.net", "5.1.10", T3, M3, None),
    "gmail_mailbox_full.eml": ("soft", "dee@example.com", "5.2.2", T2, M2, None),
    "gmail_policy_block.eml": ("soft", "ada@example.com", "5.7.1", T1, M1, None),
    "yahoo_no_account.eml": ("hard", "eve@example.net", None, T3, M3, None),
    "qmail_no_mailbox.eml": ("hard", "fay@example.net", "5.1.1", T1, M1, None),
    "lotus_notes_not_delivered.eml": ("hard", "hal@example.org", None, None, None, None),
    "sendmail_delay_warning.eml": ("delayed", "gus@example.com", "4.4.7", T2, M2, None),
    "success_dsn_relayed.eml": ("not_bounce", "jan@example.org", "2.0.0", T2, M2, None),
    "auto_reply_rfc3834.eml": ("not_bounce", None, None, T1, None, None),
    "out_of_office_subject_only.eml": ("not_bounce", None, None, T3, None, None),
    "arf_yahoo_cfl.eml": ("complaint", "kim@example.net", None, T3, M3, "abuse"),
    "arf_microsoft_jmrp.eml": ("complaint", "lee@example.com", None, T1, M1, "abuse"),
    "arf_redacted.eml": ("complaint", None, None, T2, M2, "abuse"),
    "junk.eml": ("unparseable", None, None, None, None, None),
    "truncated_mime.eml": ("unparseable", None, None, None, None, None),
}


def test_every_fixture_has_an_expectation() -> None:
    assert {path.name for path in FIXTURES.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_classified_with_recipient_code_token_and_message_id(name: str) -> None:
    returned = classify((FIXTURES / name).read_bytes())
    assert (
        returned.classification, returned.recipient, returned.status_code, returned.verp_token,
        returned.original_message_id, returned.feedback_type,
    ) == EXPECTED[name]  # fmt: skip
    assert returned.why  # every verdict says what decided it


def test_a_mailbox_full_status_with_a_permanent_class_is_soft_and_says_why() -> None:
    returned = classify((FIXTURES / "gmail_mailbox_full.eml").read_bytes())
    assert "5.2.2" in returned.why and "over quota" in returned.why


def test_an_exim_bounce_is_not_mistaken_for_an_auto_reply() -> None:
    """Exim marks its bounces Auto-Submitted: auto-replied; a mailer daemon's is a bounce."""
    raw = (FIXTURES / "exim_plain_failure.eml").read_bytes()
    assert b"Auto-Submitted: auto-replied" in raw
    assert classify(raw).classification == "hard"


def test_a_dsn_naming_one_delivered_and_one_failed_recipient_reports_the_failure() -> None:
    raw = (
        (FIXTURES / "postfix_user_unknown.eml")
        .read_bytes()
        .replace(
            b"Final-Recipient: rfc822; Ada@Example.com",
            b"Final-Recipient: rfc822; zed@example.com\nAction: delivered\nStatus: 2.0.0\n\n"
            b"Final-Recipient: rfc822; Ada@Example.com",
        )
    )
    returned = classify(raw)
    assert (returned.classification, returned.recipient) == ("hard", "ada@example.com")


def test_a_plain_message_that_reached_the_bounce_address_is_not_a_bounce() -> None:
    raw = b"From: someone@example.org\nTo: news@acme.example\nSubject: hello\n\nAbout beans\n"
    assert classify(raw).classification == "not_bounce"


@given(st.binary(max_size=2000))
def test_classify_never_raises(raw: bytes) -> None:
    assert classify(raw).classification in CLASSIFICATIONS


@given(st.text(max_size=300))
def test_classify_never_raises_on_a_damaged_report(noise: str) -> None:
    raw = (FIXTURES / "postfix_user_unknown.eml").read_bytes()
    cut = len(noise) * 7 % len(raw)
    assert classify(raw[:cut] + noise.encode("utf-8", "replace")).classification in CLASSIFICATIONS


def test_a_subject_naming_a_charset_that_is_not_ascii_reads_as_written() -> None:
    """Python's email package raises CharsetError (not a ValueError) for `=?Zoë?q?x?=`: the
    auto-reply is still told by its subject, not set aside as unparseable."""
    raw = (FIXTURES / "out_of_office_subject_only.eml").read_bytes()
    subject = next(line for line in raw.splitlines() if line.startswith(b"Subject:"))
    returned = classify(raw.replace(subject, subject + " =?Zoë?q?x?=".encode()))
    assert returned.classification == "not_bounce", returned.why
