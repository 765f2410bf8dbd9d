"""How a cell's text appears in a message: one line, escaped, short. A cell can hold anything
(CR, LF, ESC sequences, bidirectional overrides): printed as it is, it could forge an extra
`file.csv:N:` line on stderr or move a terminal's cursor."""

from __future__ import annotations

import re

SHOWN_LIMIT = 80  # characters of a value quoted in a message

# C0 and C1 controls, invisible and direction-changing marks, line and paragraph separators,
# and the lone surrogates that stand for undecodable bytes.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(found: re.Match[str]) -> str:
    character = found.group()
    code = ord(character)
    return _NAMED.get(character) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """`text` with every control or invisible character written as an escape (`\\n`, `\\x1b`)."""
    return _UNPRINTABLE.sub(_escape, text)


def shown(value: str) -> str:
    """A cell's value quoted for a message: escaped, and cut short when long."""
    if len(value) > SHOWN_LIMIT:
        value = value[: SHOWN_LIMIT - 3] + "..."
    return f"'{printable(value)}'"
