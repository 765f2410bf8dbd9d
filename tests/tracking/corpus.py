"""Request patterns seen at a tracking endpoint, each event with its expected label: what a
person did, or what a machine did. `run` feeds them through the real recording path
(record_hits, batch after batch) and pairs each event with the label it was stored with;
tests/tracking/test_corpus.py and bench/bot_confusion.py read the result.

Each pattern is one message's traffic; times are seconds after the relay accepted it. Links
are named: "shop", "cups", "grinders" (the message's three) and "honeypot" (the hidden one)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select

from mailer.config import Settings
from mailer.render.links import HONEYPOT
from mailer.store.rollups import REFETCHES
from mailer.store.tables import event_rollups, events, outbox
from mailer.tracking.bots import REFETCHED
from mailer.tracking.hits import Hit
from mailer.tracking.recording import Memory, record_hits
from mailer.workspace import Workspace

Label = Literal["person", "machine"]

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")  # fmt: skip
EDGE = CHROME + " Edg/124.0.2478.80"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
              "like Gecko) Version/17.4.1 Safari/605.1.15")  # fmt: skip
MAC_MAIL = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
            "like Gecko)")  # fmt: skip
IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Mobile/15E148")  # fmt: skip
IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")  # fmt: skip
ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36")  # fmt: skip
OUTLOOK = "Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Outlook 16.0.17531; Pro)"
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
               "GoogleImageProxy)")  # fmt: skip
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
BING_PREVIEW = ("Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) "
                "BingPreview/1.0b")  # fmt: skip
HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/124.0.6367.60 Safari/537.36")  # fmt: skip

HOME, OFFICE, PHONE = "81.2.69.160", "192.0.2.44", "2001:db8:4:7::19"
APPLE, RELAY = "17.58.63.9", "172.224.226.7"  # Apple's network; a Private Relay egress
GOOGLE, YAHOO, MICROSOFT, SCANNER = "66.249.84.1", "98.136.0.9", "40.94.1.7", "34.90.4.2"


@dataclass(frozen=True)
class Fetch:
    kind: Literal["open", "click"]
    after: float  # seconds after the relay accepted the message
    agent: str
    ip: str
    label: Label
    link: str | None = None  # a click's link by name
    method: str = "GET"


@dataclass(frozen=True)
class Pattern:
    family: str
    name: str
    fetches: tuple[Fetch, ...]


def _open(after: float, agent: str, ip: str, label: Label) -> Fetch:
    return Fetch("open", after, agent, ip, label)


def _click(after: float, link: str, agent: str, ip: str, label: Label,
           method: str = "GET") -> Fetch:  # fmt: skip
    return Fetch("click", after, agent, ip, label, link, method)


def _every_link(start: float, gap: float, agent: str, ip: str) -> tuple[Fetch, ...]:
    """A scanner following every link, the hidden one too, `gap` seconds apart."""
    names = ("shop", "honeypot", "cups", "grinders")
    return tuple(
        _click(start + n * gap, name, agent, ip, "machine") for n, name in enumerate(names)
    )


H, D = 3600.0, 86400.0
PATTERNS: tuple[Pattern, ...] = (
    # Apple Mail Privacy Protection: every image loaded as the message reaches the device.
    Pattern(
        "apple", "mpp bare agent from a relay egress", (_open(40, "Mozilla/5.0", RELAY, "machine"),)
    ),
    Pattern(
        "apple", "mpp Apple Mail agent from Apple", (_open(95, IPHONE_MAIL, APPLE, "machine"),)
    ),
    Pattern("apple", "Apple Mail without MPP at home", (_open(3 * H, MAC_MAIL, HOME, "person"),)),
    Pattern(
        "apple",
        "Safari webmail from Apple's network",
        (
            _open(2 * H, SAFARI_MAC, APPLE, "person"),
            _click(2 * H + 25, "cups", SAFARI_MAC, APPLE, "person"),
        ),
    ),
    # Gmail fetches through its proxy when someone opens the message.
    Pattern(
        "gmail",
        "Gmail reader",
        (
            _open(2 * H, GMAIL_PROXY, GOOGLE, "person"),
            _click(2 * H + 30, "shop", CHROME, HOME, "person"),
        ),
    ),
    Pattern(
        "gmail",
        "Gmail app on Android",
        (
            _open(5 * H, GMAIL_PROXY, GOOGLE, "person"),
            _click(5 * H + 12, "grinders", ANDROID_CHROME, PHONE, "person"),
        ),
    ),
    # Yahoo's proxy prefetches; a Yahoo reader's open comes through it too (known lost).
    Pattern("yahoo", "Yahoo prefetch", (_open(6, YAHOO_PROXY, YAHOO, "machine"),)),
    Pattern(
        "yahoo",
        "Yahoo reader",
        (
            _open(4 * H, YAHOO_PROXY, YAHOO, "person"),
            _click(4 * H + 40, "shop", FIREFOX, HOME, "person"),
        ),
    ),
    # Microsoft Defender Safe Links: detonation at delivery with a browser's agent.
    Pattern(
        "safe links",
        "detonation with a Chrome agent",
        (
            _open(2.5, CHROME, MICROSOFT, "machine"),
            _click(3, "shop", CHROME, MICROSOFT, "machine"),
            _click(3.3, "cups", CHROME, MICROSOFT, "machine"),
            _click(3.6, "grinders", CHROME, MICROSOFT, "machine"),
        ),
    ),
    Pattern(
        "safe links", "BingPreview", (_click(20 * 60, "shop", BING_PREVIEW, MICROSOFT, "machine"),)
    ),
    # Security gateways.
    Pattern("gateway", "Proofpoint", _every_link(12, 0.5, "Proofpoint URL Defense", SCANNER)),
    Pattern(
        "gateway",
        "Mimecast, an hour later",
        (
            _click(H, "shop", "Mimecast", SCANNER, "machine"),
            _click(H + 1, "cups", "Mimecast", SCANNER, "machine", "HEAD"),
        ),
    ),
    Pattern(
        "gateway",
        "Barracuda",
        (
            _open(30, "Barracuda Sentinel (EE)", SCANNER, "machine"),
            *_every_link(31, 1.5, "Barracuda Sentinel (EE)", SCANNER),
        ),
    ),
    Pattern(
        "gateway",
        "Chrome-agent burst, 0.2 s apart",
        (_open(44.8, CHROME, SCANNER, "machine"), *_every_link(45, 0.2, CHROME, SCANNER)),
    ),
    Pattern(
        "gateway",
        "Chrome-agent, slow after the honeypot",
        (
            _open(15 * 60, CHROME, SCANNER, "machine"),
            _click(15 * 60 + 5, "honeypot", CHROME, SCANNER, "machine"),
            _click(15 * 60 + 25, "shop", CHROME, SCANNER, "machine"),
            _click(15 * 60 + 55, "cups", CHROME, SCANNER, "machine"),
        ),
    ),
    Pattern(
        "gateway",
        "Chrome-agent, slow before the honeypot",
        (
            _click(50 * 60, "shop", CHROME, SCANNER, "machine"),
            _click(50 * 60 + 40, "grinders", CHROME, SCANNER, "machine"),
            _click(50 * 60 + 58, "honeypot", CHROME, SCANNER, "machine"),
        ),
    ),
    # Sandboxes fetch the pixel a fraction of a second after delivery; the person later.
    Pattern(
        "sandbox",
        "pixel at 0.2 s, then the reader",
        (_open(0.2, CHROME, SCANNER, "machine"), _open(25 * 60, IPHONE_MAIL, PHONE, "person")),
    ),
    Pattern("sandbox", "pixel at 0.6 s with Edge's agent", (_open(0.6, EDGE, SCANNER, "machine"),)),
    Pattern(
        "headless",
        "headless Chrome",
        (_open(30, HEADLESS, SCANNER, "machine"), _click(31, "shop", HEADLESS, SCANNER, "machine")),
    ),
    Pattern(
        "headless",
        "HTTP library",
        (_click(2 * H, "cups", "python-requests/2.31.0", SCANNER, "machine"),),
    ),
    # People.
    Pattern(
        "people",
        "desktop reader",
        (_open(2 * H, CHROME, HOME, "person"), _click(2 * H + 40, "shop", CHROME, HOME, "person")),
    ),
    Pattern(
        "people",
        "phone reader",
        (
            _open(6 * H, IPHONE_MAIL, PHONE, "person"),
            _click(6 * H + 20, "cups", IPHONE_SAFARI, PHONE, "person"),
        ),
    ),
    Pattern(
        "people",
        "Outlook at the office",
        (
            _open(D, OUTLOOK, OFFICE, "person"),
            _click(D + 120, "grinders", EDGE, OFFICE, "person"),
            _click(D + 150, "shop", EDGE, OFFICE, "person"),
        ),
    ),
    Pattern("people", "quick reader at 8 s", (_open(8, OUTLOOK, OFFICE, "person"),)),
    # A refetch within a minute is the same reading (counted as a machine's open, not stored).
    Pattern(
        "reopeners",
        "reopens the next day",
        (
            _open(H, CHROME, HOME, "person"),
            _open(H + 5, CHROME, HOME, "machine"),
            _open(D + H, CHROME, HOME, "person"),
        ),
    ),
    Pattern(
        "reopeners",
        "pixel fetched 25 times",
        (
            _open(3 * H, OUTLOOK, OFFICE, "person"),
            *(_open(3 * H + 2 * n, OUTLOOK, OFFICE, "machine") for n in range(1, 25)),
        ),
    ),
    Pattern(
        "forwards",
        "forwarded to a colleague",
        (
            _open(3 * H, CHROME, HOME, "person"),
            _open(3 * D, FIREFOX, OFFICE, "person"),
            _click(3 * D + 60, "shop", FIREFOX, OFFICE, "person"),
        ),
    ),
)

# People's events stored as a machine's on purpose, with why.
KNOWN_LOST = {
    ("Yahoo reader", 0): "Yahoo's proxy fetches for readers and for its prefetch alike, with "
    "the same agent and addresses: every Yahoo open is taken for the prefetch",
}


@dataclass(frozen=True)
class Outcome:
    pattern: Pattern
    index: int  # of the fetch in its pattern
    fetch: Fetch
    stored: Label
    reason: str | None


def batches(hits: Sequence[Hit], sizes: Sequence[int]) -> Iterator[Sequence[Hit]]:
    """`hits` cut into batches of the sizes, cycling through them."""
    start, turn = 0, 0
    while start < len(hits):
        size = sizes[turn % len(sizes)]
        yield hits[start : start + size]
        start, turn = start + size, turn + 1


def run(workspace: Workspace, settings: Settings, messages: Sequence[int],
        sizes: Sequence[int], memory: Memory | None = None) -> list[Outcome]:  # fmt: skip
    """Each pattern's fetches on a message of its own (outbox ids, one per pattern, sent and
    with the three links), all patterns' fetches in time order cut into batches of `sizes`,
    written by record_hits (with `memory` kept across batches, as the writer process does);
    each fetch with the label it was stored with."""
    assert len(messages) >= len(PATTERNS), "one sent message per pattern"
    with workspace.engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(
            select(outbox.c.id, outbox.c.sent_at, outbox.c.links)
            .where(outbox.c.id.in_(messages)))}  # fmt: skip
    timeline: list[tuple[datetime, int, int, Hit]] = []
    for number, (pattern, message) in enumerate(zip(PATTERNS, messages, strict=False)):
        row = rows[message]
        links = json.loads(row.links)
        index = {name: links.index(url) for name, url in (
            ("shop", "https://shop.example/beans?a=1"), ("cups", "https://shop.example/cups"),
            ("grinders", "https://shop.example/grinders"), ("honeypot", HONEYPOT))}  # fmt: skip
        for n, fetch in enumerate(pattern.fetches):
            at = row.sent_at + timedelta(seconds=fetch.after)
            link = index[fetch.link] if fetch.link else None
            timeline.append((at, number, n, Hit(fetch.kind, f"m{message}", link, at, fetch.agent,
                                                fetch.ip, fetch.method)))  # fmt: skip
    timeline.sort(key=lambda item: (item[0], item[1], item[2]))
    for batch in batches([hit for *_, hit in timeline], sizes):
        with workspace.engine.begin() as connection:
            record_hits(connection, settings, workspace.key, batch, memory)
        if memory is not None:
            memory.keep()
    with workspace.engine.connect() as connection:
        stored = connection.execute(
            select(events.c.outbox_id, events.c.kind, events.c.properties, events.c.occurred_at)
            .where(events.c.outbox_id.in_(messages)).order_by(events.c.occurred_at, events.c.id)
        ).all()  # fmt: skip
        refetched = connection.execute(
            select(event_rollups.c.outbox_id, event_rollups.c.events, event_rollups.c.last_at)
            .where(event_rollups.c.outbox_id.in_(messages), event_rollups.c.kind == REFETCHES)
        ).all()  # fmt: skip
    # Each fetch's label in time order: a stored row's, and a pixel fetched again, counted
    # (not stored), as a machine's at the last of its message's count.
    timed: dict[int, list[tuple[datetime, Label, str | None]]] = {}
    for event in stored:
        label: Label = "machine" if event.kind.startswith("machine_") else "person"
        timed.setdefault(event.outbox_id, []).append(
            (event.occurred_at, label, event.properties.get("machine")))  # fmt: skip
    for message, n, last in refetched:
        timed.setdefault(message, []).extend([(last, "machine", REFETCHED)] * n)
    by_message = {message: [(label, reason) for _, label, reason in sorted(
        fetches, key=lambda fetch: fetch[0])] for message, fetches in timed.items()}  # fmt: skip
    outcomes = []
    for pattern, message in zip(PATTERNS, messages, strict=False):
        order = sorted(range(len(pattern.fetches)), key=lambda n: pattern.fetches[n].after)
        got = by_message.get(message, [])
        assert len(got) == len(pattern.fetches), (pattern.name, got)
        for n, (label, reason) in zip(order, got, strict=True):
            outcomes.append(Outcome(pattern, n, pattern.fetches[n], label, reason))
    return outcomes


def confusion(outcomes: Sequence[Outcome]) -> dict[tuple[Label, Label], int]:
    """(true label, stored label) -> how many events."""
    counts: dict[tuple[Label, Label], int] = {}
    for outcome in outcomes:
        cell = (outcome.fetch.label, outcome.stored)
        counts[cell] = counts.get(cell, 0) + 1
    return counts
