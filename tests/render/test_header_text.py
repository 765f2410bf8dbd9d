"""header_text returns a value it has nothing to do to as it is, without the work: the same
text as the whole cleaning gives, whatever the value holds."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from mailer.render.message import _cleaned, _plain_line, header_text

PIECES = ["a", "Zoë", " ", "  ", "\t", "\r\n", "\x00", "\x1b", "\x7f", "\x85", "\xa0",
          "\u2028", "\u1680", "\u200b", "\ufeff", "=?", "?=", "=?utf-8?q?X=0D=0AY?=", "?q?",
          "é", "🎉"]  # fmt: skip


@given(st.lists(st.sampled_from(PIECES), max_size=12) | st.text(max_size=30).map(lambda t: [t]))
@example(["Welcome to Acme Coffee, Ada"])
@example([" Ada"])
@example(["=?", "Zoë", "?q?", "?="])  # a charset name that is not ASCII: CharsetError
def test_a_value_taken_as_it_is_is_what_cleaning_it_gives(pieces: list[str]) -> None:
    value = "".join(pieces)
    assert header_text(value) == _cleaned(value)


def test_only_plain_values_skip_the_cleaning() -> None:
    assert _plain_line("Welcome to Acme Coffee, Zoë 🎉")
    for value in ["a  b", " a", "a ", "a\tb", "a\u00a0b", "=?utf-8?b?QQ==?=", "a\x00"]:
        assert not _plain_line(value), value


def test_an_encoded_word_with_a_charset_name_that_is_not_ascii_is_only_cleaned() -> None:
    """Python's email package raises CharsetError (not a ValueError) for it: the name is kept
    as text, never read as an encoded word, and the message is written."""
    assert header_text("=?Zoë?q?x?=") == "= ?Zoë?q?x?="
