from __future__ import annotations

import binascii
import email
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parseaddr

import dkim  # type: ignore[import-untyped]
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailer.render import mime
from mailer.render.dkim import Algorithm, DkimKey, generate_key, sign
from mailer.render.message import header_text
from mailer.render.mime import alternative, mailbox, unstructured

printable = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120)
# What a CSV cell or a form may hold: long runs without a space, controls, encoded-word look.
hostile_pieces = st.one_of(
    printable,
    st.sampled_from(["\r\n", "\n", "\r", "\x1b[2J", "\x00", "\x7f", "\x85", "\u2028", " ",
                     "Bcc: eve@example.com", "=?utf-8?q?=0D=0ABcc:_x?=", "=?utf-8?b?", "?="]),
)  # fmt: skip
long_words = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=12),
                       st.integers(1, 600))  # fmt: skip
hostile = st.lists(st.one_of(hostile_pieces, long_words), max_size=6).map("".join)


def build(subject: str, name: str, text: str, html: str) -> EmailMessage:
    headers = [("From", mailbox("Acme", "news@acme.example")),
               ("To", mailbox(header_text(name), "ada@example.com")),
               ("Subject", unstructured(header_text(subject)))]  # fmt: skip
    data = alternative(headers, text, html, boundary="=_0123456789abcdef")
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


@settings(max_examples=300)
@given(subject=printable, name=printable, text=printable, html=printable)
def test_whatever_the_data_the_message_parses_back_with_only_our_headers(
    subject: str, name: str, text: str, html: str
) -> None:
    message = build(subject, name, text, html)
    assert set(message.keys()) == {"From", "To", "Subject", "MIME-Version", "Content-Type"}
    assert message["Subject"] == header_text(subject)
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and rich is not None
    normalise = lambda value: value.replace("\r\n", "\n").replace("\r", "\n")  # noqa: E731
    assert normalise(plain.get_content()).rstrip("\n") == normalise(text).rstrip("\n")
    assert normalise(rich.get_content()).rstrip("\n") == normalise(html).rstrip("\n")


def test_long_subjects_fold_at_spaces_and_a_word_too_long_for_a_line_is_encoded() -> None:
    words = unstructured("word " * 40 + "x" * 60)
    assert "=?" not in words and words.endswith("\r\n " + "x" * 60)
    assert max(len(line) for line in f"Subject: {words}".split("\r\n")) <= 78
    long = unstructured("word " * 40 + "x" * 90)  # 90 characters cannot fold: encoded words
    assert max(len(line) for line in f"Subject: {long}".split("\r\n")) <= 78
    assert str(make_header(decode_header(long))) == "word " * 40 + "x" * 90


def display_name(data: bytes) -> str:
    """The To header's display name, decoded as RFC 2047 6.2 says: the space between two
    encoded words is not part of the text. (Python 3.11's address parser keeps it,
    CPython gh-128110; its older decode_header does not.)"""
    raw = email.message_from_bytes(data, policy=policy.compat32)["To"]
    name, _ = parseaddr(raw.replace("\r\n", ""))
    return str(make_header(decode_header(name)))


@settings(max_examples=300)
@given(subject=hostile, name=hostile)
# What a lenient decoder reads as encoded words though RFC 2047 would not (found by CI's run).
@example(subject="=??B?0??= x", name="=??B?0??=")
@example(subject="", name="=??B???=")
def test_long_and_hostile_values_fold_into_short_lines_and_read_back_the_same(
    subject: str, name: str
) -> None:
    headers = [("From", mailbox("Acme", "news@acme.example")),
               ("To", mailbox(header_text(name), "ada@example.com")),
               ("Subject", unstructured(header_text(subject)))]  # fmt: skip
    data = alternative(headers, "text", "<p>html</p>", boundary="=_0123456789abcdef")
    head = data.split(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n"):
        assert len(line) <= 78  # RFC 5322 2.1.1 (998 is the limit a relay enforces)
        assert not any(byte in line for byte in (b"\r", b"\n", b"\x1b", b"\x00", b"\x7f"))
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert set(message.keys()) == {"From", "To", "Subject", "MIME-Version", "Content-Type"}
    assert message["Subject"] == header_text(subject)
    (to,) = message["To"].addresses
    assert to.addr_spec == "ada@example.com"
    assert display_name(data) == header_text(name)
    for value in (message["Subject"], display_name(data)):
        assert not any(character in value for character in "\r\n\x1b\x00\x7f")


def test_a_5000_character_subject_without_a_space_is_folded() -> None:
    folded = unstructured("Welcome, " + "A" * 5000)
    assert max(len(line) for line in f"Subject: {folded}".split("\r\n")) <= 78
    assert str(make_header(decode_header(folded))) == "Welcome, " + "A" * 5000


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_folded_long_headers_pass_an_independent_dkim_verifier(algorithm: Algorithm) -> None:
    private, record = generate_key(algorithm)
    key = DkimKey("acme.example", "s1", algorithm, private)
    long_name = "Zoë " * 60 + "Q" * 300
    headers = [("From", mailbox("Acme", "news@acme.example")),
               ("To", mailbox(header_text(long_name), "zoe@example.fr")),
               ("Subject", unstructured(header_text("Welcome, " + "A" * 5000)))]  # fmt: skip
    data = sign(alternative(headers, "text", "<p>html</p>", boundary="=_0123"), key)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record.encode() if name == b"s1._domainkey.acme.example." else b""

    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(data.replace(b"QUFB", b"QUFC", 1), dnsfunc=dns)  # an A made a C


def whole_text_quoted_printable(text: str) -> str:
    """The reference: binascii's encoder over the whole text at once, LF line ends, then CRLF."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(normalised.encode("utf-8"), istext=True).decode("ascii")
    return encoded.replace("\n", "\r\n")


LINE_PIECES = ["a", "b", " ", "\t", ".", "=", "\n", "\r\n", "\r", "é", "—", "\x00", "\x7f", "-"]


@given(st.lists(st.sampled_from(LINE_PIECES), max_size=400), st.integers(0, 3))
@example(["a"] * 74 + ["\t", "\n"], 0)  # whitespace at the end of a full line
@example(["a"] * 75 + [" "], 0)  # ... and at the end of the text
def test_quoted_printable_line_by_line_is_the_whole_text_encoded(
    pieces: list[str], repeat: int
) -> None:
    text = "".join(pieces)
    for _ in range(repeat + 1):  # again: lines now come from the cache
        assert mime._quoted_printable(text) == whole_text_quoted_printable(text)


def test_quoted_printable_lines_are_remembered_up_to_a_bound() -> None:
    lines = [f"line {number} of a long message\n" for number in range(mime.QP_LINES_KEPT + 10)]
    assert mime._quoted_printable("".join(lines)) == whole_text_quoted_printable("".join(lines))
    assert len(mime._qp_lines) <= mime.QP_LINES_KEPT


ASCII_PIECES = ["a", "b", "=", " ", ".", "-", "~", "ab=cd", "x" * 40, "=" * 5, "http://x.ex/c/1"]


@given(st.lists(st.sampled_from(ASCII_PIECES), max_size=60))
@example(["a"] * 75)  # full lines, and one character either side
@example(["a"] * 76)
@example(["a"] * 77)
@example(["a"] * 73 + ["="])  # an escape that would end at column 76
@example(["a"] * 72 + ["="])
@example(["a"] * 74 + ["=", "a"])
@example(["."])
@example(["a", " "])
def test_a_printable_line_is_encoded_as_binascii_encodes_it(pieces: list[str]) -> None:
    line = "".join(pieces)
    assert mime._qp_line(line) == whole_text_quoted_printable(line + "\n")[: -len("\r\n")]
