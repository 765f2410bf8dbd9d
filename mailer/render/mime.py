"""Writing a multipart/alternative message as bytes, directly.

Python's email package parses every header it is given and re-folds it on output, which cost
1.5 ms a message, four times rendering the templates (bench/render_bench.py). The structure of
our messages is fixed, so it is written out here, the pieces encoded by faster means (RFC 2047
"B" words here, quoted-printable by binascii), and the tests parse every message back with the
email package.

Values must already be single lines (render.message.header_text): nothing here can start a
new header.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from email.errors import MessageError
from email.header import decode_header, make_header
from email.utils import formataddr

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters (and MUST be at most 998)
LEAD = len("Reply-To: ")  # the longest "Name: " our folded values follow on their first line
# base64 of 42 bytes is 56 characters; with =?utf-8?b?...?=, 68 (RFC 2047: at most 75), which
# fits the first line after LEAD as well as every folded line after its space.
_WORD_BYTES = 42


def unstructured(value: str) -> str:
    """A header value folded so that every line is at most MAX_LINE characters: ASCII folded
    at spaces (RFC 5322 2.2.3); anything else, and a word too long for a line, as RFC 2047
    encoded words (a long word cannot be folded, and a line over 998 is refused by relays)."""
    if value.isascii():
        folded = _fold(value)
        if folded is not None:
            return folded
    return encoded_words(value)


def encoded_words(value: str) -> str:
    """RFC 2047 "B" encoded words, one per line, each at most 68 characters, never splitting a
    character. (The email package's Header.encode measures every character of every candidate
    encoding: ten times slower, for the same result.)"""
    data, words, start = value.encode("utf-8"), [], 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return (CRLF + " ").join(words)


def wire_address(address: str) -> str:
    """The address as SMTP and headers carry it: a Unicode domain in its ASCII (IDNA) form.
    A non-ASCII local part stays UTF-8, which only an SMTPUTF8 relay accepts."""
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}"


def mailbox(name: str | None, address: str) -> str:
    """`Name <address>`, the name quoted or RFC 2047-encoded as needed, folded before the
    address when the line would pass MAX_LINE."""
    address = wire_address(address)
    local, _, domain = address.rpartition("@")
    if not name:
        return f"<{local}@{domain}>" if not local.isascii() else formataddr(("", address))
    if not name.isascii():
        phrase = encoded_words(name)
    else:
        # formataddr quotes the name when it must; the address is cut off again after.
        phrase = formataddr((name, "x@x"))[: -len(" <x@x>")]
        if len(phrase) > MAX_LINE - LEAD:
            phrase = encoded_words(name)  # a long name: encoded words fold, a quoted one not
    last = phrase.rpartition(CRLF)[2]
    room = MAX_LINE - (1 if CRLF in phrase else LEAD)
    space = " " if len(last) + len(address) + 3 <= room else CRLF + " "
    return f"{phrase}{space}<{local}@{domain}>"


def _fold(value: str) -> str | None:
    """A value of ASCII words broken at spaces, so that no line passes MAX_LINE; None when a
    word is too long for any line."""
    lines, current, room = [], "", MAX_LINE - LEAD
    for word in value.split(" "):
        if current and len(current) + 1 + len(word) > room:
            lines.append(current)
            current, room = word, MAX_LINE - 1  # a folded line starts with its space
        else:
            current = f"{current} {word}" if current else word
        if len(current) > room:
            return None
    lines.append(current)
    return (CRLF + " ").join(lines)


# Quoted-printable lines already encoded, by their text: most lines of a message are the
# template's own, the same in every message. Emptied when full (contacts' lines pass through).
QP_LINES_KEPT = 20_000
_qp_lines: dict[str, str] = {}


def _quoted_printable(text: str) -> str:
    """Lines of at most 76 characters, each ending in CRLF (RFC 2045 6.7).

    binascii's C encoder, line by line: it encodes a line the same whatever lines come
    before or after it (each line is given with its LF, as it follows in the text: the end of
    the text is encoded differently), so a line seen before is looked up instead (HTML of a
    cached template: a third of the cost). It ends its soft line breaks as the text's first
    line ends, so it is given LF only, and every LF becomes CRLF after.
    """
    *lines, last = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    known, encoded = _qp_lines, []
    for line in lines:
        done = known.get(line)
        if done is None:
            done = _qp_line(line)
            if len(known) >= QP_LINES_KEPT:
                known.clear()
            known[line] = done
        encoded.append(done)
    encoded.append(_qp(last))
    return CRLF.join(encoded)


def decoded_words(value: str) -> str | None:
    """`value` with its RFC 2047 encoded words decoded, or None where one cannot be (a bad
    encoding, an unknown charset, a charset name that is not ASCII: Python's email package
    raises ValueError, LookupError or a MessageError such as CharsetError for `=?Zoë?q?x?=`)."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, MessageError):
        return None


def _qp_line(line: str) -> str:
    """One line as binascii encodes it when a line end follows, without that line end.

    A line of printable ASCII (the links with their tokens, the lines that differ from one
    message to the next) is written here, at a sixth of binascii's cost: "=" is the only
    character to escape, and the soft line breaks go where binascii puts them (before a
    character at column 76 unless it ends the line, before an escape that would pass it).
    binascii encodes every other line: a space or tab at the end, a lone ".", other bytes.
    """
    if not _printable_ascii(line) or line[-1:] == " " or line == ".":
        return _qp(line + "\n")[: -len(CRLF)]
    escaped = line.replace("=", "=3D")
    pieces, start, end = [], 0, len(escaped)
    while end - start > 76 or (end - start == 76 and escaped[-3] == "="):
        cut = start + 75
        if escaped[cut - 1] == "=":
            cut -= 1
        elif escaped[cut - 2] == "=":
            cut -= 2
        pieces.append(escaped[start:cut])
        start = cut
    pieces.append(escaped[start:])
    return ("=" + CRLF).join(pieces)


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _printable_ascii(line: str) -> bool:
    """Space to "~" only. (Deleting those bytes and finding none left is twice as fast as
    str.isprintable, which looks each character up in the Unicode tables.)"""
    return line.isascii() and not line.encode("ascii").translate(None, _PRINTABLE_ASCII)


def _qp(text: str) -> str:
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")
    return encoded.replace("\n", CRLF)


@dataclass(frozen=True)
class Alternative:
    """A message as `alternative` writes it, with its header fields still at hand: DKIM signs
    them as they are (render.dkim.sign_fields), without reading them back out of the bytes."""

    fields: list[tuple[str, str]]  # (name, value) in order, MIME's own last
    data: bytes  # the whole message


def alternative(headers: list[tuple[str, str]], text: str, html: str, boundary: str) -> bytes:
    """The whole message: `headers` (name, ready value), then a text and an HTML part.

    `boundary` should start with "=_": quoted-printable always escapes "=", so no body line
    can ever equal the boundary.
    """
    return alternative_fields(headers, text, html, boundary).data


def alternative_fields(headers: list[tuple[str, str]], text: str, html: str,
                       boundary: str) -> Alternative:  # fmt: skip
    """`alternative`, and the header fields it wrote."""
    fields = [
        *headers,
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    lines = [f"{name}: {value}" for name, value in fields]
    lines.append("")
    for subtype, body in (("plain", text), ("html", html)):
        lines += [
            f"--{boundary}",
            f'Content-Type: text/{subtype}; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            _quoted_printable(body),
        ]
    lines += [f"--{boundary}--", ""]
    return Alternative(fields, CRLF.join(lines).encode("utf-8"))
