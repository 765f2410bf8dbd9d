"""Click tracking: every http(s) link of a message becomes a link to the tracking endpoint
(`/c/TOKEN`), whose token names the message and the link's index; the endpoint looks the
target up, so no request can redirect anywhere the message did not link to.

`mailto:`, `tel:`, anchors, our own tracking links and `<a data-notrack>` stay as they are.
HTML is edited in place (only href values change), never re-serialised.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import NamedTuple

_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(
    r"""\shref\s*=\s*(?:"(?P<double>[^"]*)"|'(?P<single>[^']*)'|(?P<bare>[^\s>"']+))""",
    re.IGNORECASE,
)
_TEXT_URL = re.compile(r"""https?://[^\s<>"'\]\)]+""")
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)

TrackedUrl = Callable[[int], str]  # link index -> the URL to put in its place
# The target of the hidden link no person sees: whatever follows it is a machine
# (tracking/bots.py), and the clicks around it in time are taken for the same machine's.
HONEYPOT = "honeypot:"


class LinkTable:
    """The links of one message, in order; each target gets one index."""

    def __init__(self, tracking_base: str, tracked_url: TrackedUrl) -> None:
        self.targets: list[str] = []
        self._index: dict[str, int] = {}
        self._base = tracking_base
        self._tracked_url = tracked_url

    def tracked(self, target: str) -> str | None:
        """The tracked URL for `target`, or None when it stays as it is."""
        if not target.lower().startswith(("http://", "https://")) or target.startswith(self._base):
            return None
        if target not in self._index:
            self._index[target] = len(self.targets)
            self.targets.append(target)
        return self._tracked_url(self._index[target])

    def rewrite_html(self, document: str) -> str:
        def anchor(match: re.Match[str]) -> str:
            tag = match.group(0)
            try:
                href = _hrefs[tag]
            except KeyError:
                href = _href(tag)
                if len(_hrefs) >= HREFS_KEPT:
                    _hrefs.clear()
                _hrefs[tag] = href
            if href is None:
                return tag
            url = self.tracked(href.target)
            if url is None:
                return tag
            quoted = html.escape(url, quote=True)
            return href.before + (f'"{quoted}"' if href.bare else quoted) + href.after

        return _ANCHOR.sub(anchor, document)

    def add_honeypot(self, document: str) -> str:
        """A link no person sees or reaches: hidden, empty, out of the tab order."""
        self.targets.append(HONEYPOT)
        url = html.escape(self._tracked_url(len(self.targets) - 1), quote=True)
        trap = (f'<a href="{url}" style="display:none" aria-hidden="true" tabindex="-1"'
                ' data-notrack></a>')  # fmt: skip
        return _after_body_opening(document, trap)

    def rewrite_text(self, text: str) -> str:
        return _TEXT_URL.sub(lambda match: self.tracked(match.group(0)) or match.group(0), text)


class Href(NamedTuple):
    """An `<a>` tag cut around the value of its href."""

    target: str  # the value, as a URL (character references decoded)
    before: str
    after: str
    bare: bool  # unquoted in the tag


# The tags of a template's links are the same in every message: each is read once (the tags
# with a per-message URL, e.g. the unsubscribe link, pass through; emptied when full).
HREFS_KEPT = 4096
_hrefs: dict[str, Href | None] = {}


def _href(tag: str) -> Href | None:
    """The href of an `<a>` tag; None without one, or with data-notrack."""
    found = _HREF.search(tag)
    if found is None or "data-notrack" in tag.lower():
        return None
    group = found.lastgroup or "bare"
    start, end = found.span(group)
    target = html.unescape(found.group(group)).strip()
    return Href(target, tag[:start], tag[end:], group == "bare")


def add_open_pixel(document: str, pixel_url: str) -> str:
    pixel = (f'<img src="{html.escape(pixel_url)}" width="1" height="1" alt="" '
             'style="display:block;border:0;width:1px;height:1px">')  # fmt: skip
    closing = _BODY_CLOSE.search(document)
    if closing is None:
        return document + pixel
    return document[: closing.start()] + pixel + document[closing.start() :]


def add_preheader(document: str, preheader: str) -> str:
    """The preview text inboxes show after the subject, hidden in the message itself."""
    hidden = ('<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
              f"{html.escape(preheader)}</div>")  # fmt: skip
    return _after_body_opening(document, hidden)


def _after_body_opening(document: str, insert: str) -> str:
    """`insert` as the first thing in <body> (at the start, for a fragment without one)."""
    opening = _BODY_OPEN.search(document)
    if opening is None:
        return insert + document
    return document[: opening.end()] + insert + document[opening.end() :]
