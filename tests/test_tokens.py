from __future__ import annotations

import base64
import hmac

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailer.tokens import TokenError, TokenKeys, sign, verify

KEYS = TokenKeys(b"s" * 32)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\x1f",
                                               blacklist_categories=("Cs",)), max_size=20),
                min_size=1, max_size=4))  # fmt: skip
def test_a_signed_token_gives_back_its_fields(fields: list[str]) -> None:
    token = sign(KEYS, "click", *fields)
    assert verify(KEYS, "click", token) == fields


def test_tokens_are_url_safe() -> None:
    token = sign(KEYS, "click", "message-42", 3)
    assert all(c.isalnum() or c in "._-" for c in token)


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),    # another MAC
    lambda t: t.replace(t.split(".")[1], sign(KEYS, "click", "message-43", 3).split(".")[1]),
    lambda t: "1." + t,                                   # malformed
    lambda t: "",
    lambda t: t + "=",
])  # fmt: skip
def test_forged_or_altered_tokens_are_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    token = sign(KEYS, "click", "message-42", 3)
    with pytest.raises(TokenError):
        verify(KEYS, "click", tamper(token))


def test_a_token_only_works_for_its_purpose_and_secret() -> None:
    token = sign(KEYS, "click", "message-42", 3)
    with pytest.raises(TokenError, match="forged"):
        verify(KEYS, "unsubscribe", token)
    with pytest.raises(TokenError, match="forged"):
        verify(TokenKeys(b"t" * 32), "click", token)


def test_key_rotation_keeps_old_tokens_until_retired() -> None:
    old = sign(KEYS, "open", "m1")
    rotated = TokenKeys(KEYS.secret, version=2, oldest=1)
    assert verify(rotated, "open", old) == ["m1"]
    assert sign(rotated, "open", "m1").startswith("2.")
    with pytest.raises(TokenError, match="version 1 is no longer accepted"):
        verify(TokenKeys(KEYS.secret, version=2, oldest=2), "open", old)


# Look-alike spellings of a version: leading zeros, Arabic-Indic, Extended Arabic-Indic,
# Devanagari, Bengali, Thai and full-width digits, surrounding whitespace.
ONES = ["01", "001", "\u0661", "\u06f1", "\u0967", "\u09e7", "\u0e51", "\uff11", " 1", "1 ", "+1"]
SPACES = ["\n", "\r\n", " ", "\t", "\x00", "\u00a0", "\u2028"]
LOOK_ALIKE = st.sampled_from(["0", "1", "=", ".", "\u0661", "\u0967", "\uff11", *SPACES])


@given(st.sampled_from(ONES))
def test_a_version_has_one_spelling_in_ascii_digits(one: str) -> None:
    token = sign(KEYS, "click", "m1", 0)
    assert token.startswith("1.")
    with pytest.raises(TokenError, match="malformed"):
        verify(KEYS, "click", one + token[1:])


@given(st.sampled_from(SPACES), st.booleans())
def test_nothing_may_come_before_or_after_a_token(space: str, before: bool) -> None:
    token = sign(KEYS, "open", "m1")
    with pytest.raises(TokenError, match="malformed"):
        verify(KEYS, "open", space + token if before else token + space)


CANONICAL = sign(KEYS, "click", "message-42", 3)


@given(st.integers(0, len(CANONICAL)), st.integers(0, 2),
       st.one_of(st.lists(LOOK_ALIKE, max_size=3).map("".join), st.text()))  # fmt: skip
@example(0, 0, "0")
@example(0, 1, "\u0661")
@example(0, 1, "\u0967")
@example(len(CANONICAL), 0, "\n")
@example(0, 0, " ")
def test_any_spelling_but_the_canonical_one_is_refused(start: int, cut: int, inserted: str) -> None:
    token = CANONICAL
    spelling = token[:start] + inserted + token[start + cut :]
    if spelling != token:
        with pytest.raises(TokenError):
            verify(KEYS, "click", spelling)


def test_the_token_format_is_unchanged() -> None:
    """Tokens already in sent mail must keep verifying, and tracking reads this format."""
    keys = TokenKeys(b"0123456789abcdef0123456789abcdef", 3, 1)
    assert sign(keys, "click", "msg-42", 7) == "3.bXNnLTQyHzc.67Q5wPB_bgg5JigQZDuSjQ"
    assert sign(keys, "unsubscribe", "é/ü") == "3.w6kvw7w.kgQdqApOk5tqMKpiQnEsEA"


@given(st.sampled_from(["click", "open", "bounce"]),
       st.text(alphabet=st.characters(blacklist_characters="\x1f", blacklist_categories=("Cs",)),
               max_size=30), st.integers(0, 10**6))  # fmt: skip
def test_a_token_is_the_documented_hmac(purpose: str, key: str, index: int) -> None:
    payload = f"{key}\x1f{index}".encode()
    derived = hmac.digest(KEYS.secret, b"mailer token key v1", "sha256")
    mac = hmac.digest(derived, purpose.encode() + b"\x00" + payload, "sha256")[:16]
    encoded = [base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (payload, mac)]
    assert sign(KEYS, purpose, key, index) == f"1.{encoded[0]}.{encoded[1]}"
