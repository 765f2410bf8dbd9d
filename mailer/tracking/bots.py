"""Telling a person's open or click from a machine's: pure functions over one batch of hits
and the message's hits already stored.

`judge(hits, sent_at, honeypot, stored, apple)` gives one `Verdict` per hit, in order, and the
stored hits that the batch shows to be a machine's. The rules, first match wins (its reason is
the one kept):

1. image proxies that fetch without a person (opens only), see `IMAGE_PROXIES`, and Apple's
   proxy addresses with a browser-less or Apple Mail user agent (Mail Privacy Protection);
2. link scanners, security gateways, HTTP libraries, crawlers, an empty user agent
   (opens and clicks), see `SCANNERS`;
3. a HEAD request;
4. a click less than `TOO_SOON`, an open less than `OPEN_TOO_SOON`, after the relay accepted
   the message;
5. `SAME_SECOND_LINKS` or more distinct links of one message clicked within one second:
   all of those clicks;
6. a click on the message's hidden honeypot link, and every click of that message within
   `AROUND_HONEYPOT` of it, before or after;
7. an open within `AROUND_MACHINE_CLICK` of a machine's click on the same message;
8. a pixel fetched again less than `REFETCH` after the message's last open: the same open.

Rules 5-8 look at the message's stored hits as well as the batch's, so a burst that straddles
two batches is judged whole: a later batch that completes a burst, or a honeypot click, turns
the stored clicks and opens it reaches into a machine's (`Judgement.relabel`).

Image proxies, decided one by one:
- Apple Mail Privacy Protection: machine. Apple's relay loads every image as the message
  reaches the device, read or not, and the device shows the cached copy afterwards. It sends
  the bare user agent `Mozilla/5.0`, or Apple Mail's own (WebKit without `Safari/`), from
  the iCloud Private Relay egress ranges or Apple's 17.0.0.0/8 (tracking/apple.py). Safari
  on Private Relay is a person's browser: its user agent says `Safari/`.
- Gmail (`GoogleImageProxy`, `via ggpht.com`): person. Gmail fetches through its proxy when
  someone opens the message and caches the image afterwards, so the fetch is the first
  open. Later opens never reach us.
- Yahoo Mail (`YahooMailProxy`): machine. Yahoo documents it as a content fetch proxy for
  what messages embed, not as a reader's fetch, so its loads prove no one read the message.
  Some real Yahoo opens are lost this way. As a click it is a link fetch, in `SCANNERS`.
- Outlook and Microsoft 365: no image-proxy rule. `Microsoft Office/16.0 ... Outlook` and
  `ms-office` are the Outlook client showing images to a person. No `OutlookImageProxy`
  user agent is documented. Microsoft's machines (`BingPreview`, Safe Links) are scanners.

Limits: the stored hits are the message's (events.outbox_id), so hits stored before
migration 0019 are not seen. A message missing from `sent_at` is spared rule 4 only. A
scanner that copies a browser's user agent, waits more than `OPEN_TOO_SOON` and
`TOO_SOON`, fetches from an address of its own and follows one link without the honeypot
is a person as far as anything here can tell. An open beside a machine's click (rule 7) may
be a person reading the message as the scanner checks it: that open is lost.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Container, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from mailer.tracking.hits import Hit, StoredHit, Verdict

TOO_SOON = timedelta(seconds=10)  # no person reads a message and clicks that fast
SAME_SECOND_LINKS = 3  # distinct links of one message clicked within one second
AROUND_HONEYPOT = timedelta(seconds=60)  # a scanner's other clicks on that message
# A sandbox fetches the pixel a fraction of a second after the message lands; a person needs
# the message delivered past the relay, synced to a device, noticed and opened.
OPEN_TOO_SOON = timedelta(seconds=2)
AROUND_MACHINE_CLICK = AROUND_HONEYPOT  # a scanner loads the images as it checks the links
REFETCH = timedelta(seconds=60)  # a client re-rendering the message is not a new reading
# How far from a batch's hits the stored ones can matter.
WINDOW = max(AROUND_HONEYPOT + AROUND_MACHINE_CLICK, REFETCH, timedelta(seconds=1))

APPLE_MPP_USER_AGENT = "Mozilla/5.0"  # exactly this, no more tokens

# Opens only: (lower-case token found anywhere in the user agent, reason). Gmail's proxy
# (`googleimageproxy`, `ggpht.com`) is missing on purpose: it fetches when a person opens.
IMAGE_PROXIES: tuple[tuple[str, str], ...] = (("yahoomailproxy", "Yahoo Mail proxy prefetch"),)

# Opens and clicks: (lower-case token found anywhere in the user agent, reason).
SCANNERS: tuple[tuple[str, str], ...] = (
    # security gateways and link scanners
    ("barracuda", "link scanner (Barracuda)"),
    ("mimecast", "link scanner (Mimecast)"),
    ("proofpoint", "link scanner (Proofpoint)"),
    ("ppops", "link scanner (Proofpoint)"),
    ("safelinks", "link scanner (Microsoft Defender Safe Links)"),
    ("bingpreview", "link scanner (Microsoft BingPreview)"),
    ("symantec", "link scanner (Symantec)"),
    ("broadcom", "link scanner (Broadcom)"),
    ("ironport", "link scanner (Cisco IronPort)"),
    ("trend micro", "link scanner (Trend Micro)"),
    ("trendmicro", "link scanner (Trend Micro)"),
    ("sophos", "link scanner (Sophos)"),
    ("fireeye", "link scanner (FireEye)"),
    ("yahoomailproxy", "link fetch (Yahoo Mail Proxy)"),
    # HTTP libraries and command-line tools
    ("python-requests", "HTTP library (python-requests)"),
    ("python-urllib", "HTTP library (python-urllib)"),
    ("python-httpx", "HTTP library (python-httpx)"),
    ("aiohttp", "HTTP library (aiohttp)"),
    ("go-http-client", "HTTP library (Go-http-client)"),
    ("libwww-perl", "HTTP library (libwww-perl)"),
    ("curl", "command-line tool (curl)"),
    ("wget", "command-line tool (Wget)"),
    # headless browsers
    ("headlesschrome", "headless browser (HeadlessChrome)"),
    ("phantomjs", "headless browser (PhantomJS)"),
    # crawlers that say so
    ("bot", "crawler ('bot' in user agent)"),
    ("spider", "crawler ('spider' in user agent)"),
    ("crawler", "crawler ('crawler' in user agent)"),
)

# People's devices whose names contain a token above (CUBOT phones: "Android 10; CUBOT X30").
NOT_SCANNERS: tuple[str, ...] = ("cubot",)


@functools.lru_cache(maxsize=4096)  # a batch holds a few mail clients' agents, many times
def apple_mail_agent(user_agent: str) -> bool:
    """The bare `Mozilla/5.0`, or Apple Mail's WebKit agent (Safari's says `Safari/`)."""
    agent = user_agent.strip().lower()
    return agent == APPLE_MPP_USER_AGENT.lower() or (
        "applewebkit" in agent and "safari/" not in agent
        and any(device in agent for device in ("macintosh", "iphone", "ipad"))
    )  # fmt: skip


def image_proxy(user_agent: str, ip: str = "", apple: Container[str] = ()) -> str | None:
    """Rule 1: why this open is an image proxy's prefetch, or None. `apple`: Apple's proxy
    addresses (tracking/apple.py)."""
    if user_agent.strip() == APPLE_MPP_USER_AGENT:
        return "Apple Mail Privacy Protection"
    if ip and apple_mail_agent(user_agent) and ip in apple:  # the cheap test first
        return "Apple Mail Privacy Protection (Apple proxy address)"
    return _prefetching_proxy(user_agent)


@functools.lru_cache(maxsize=4096)
def _prefetching_proxy(user_agent: str) -> str | None:
    agent = user_agent.lower()
    return next((reason for token, reason in IMAGE_PROXIES if token in agent), None)


@functools.lru_cache(maxsize=4096)
def scanner(user_agent: str) -> str | None:
    """Rule 2: why this user agent is a scanner, a library or a crawler, or None."""
    agent = user_agent.strip().lower()
    if not agent:
        return "no user agent"
    if agent == APPLE_MPP_USER_AGENT.lower():
        return "bare 'Mozilla/5.0' user agent"  # a click: no browser a person uses sends it
    for person in NOT_SCANNERS:
        agent = agent.replace(person, "")
    return next((reason for token, reason in SCANNERS if token in agent), None)


def head_request(method: str) -> str | None:
    """Rule 3: a HEAD only checks that the link answers; a person's browser sends GET."""
    return "HEAD request" if method.upper() == "HEAD" else None


def too_soon(at: datetime, sent_at: datetime | None) -> str | None:
    """Rule 4: why a click came too soon after delivery, or None (also when unknown)."""
    if sent_at is None:
        return None
    after = at - sent_at
    if after >= TOO_SOON:
        return None
    if after < timedelta(0):
        return "clicked before delivery"
    return f"clicked {int(after.total_seconds())} s after delivery"


def open_too_soon(at: datetime, sent_at: datetime | None) -> str | None:
    """Rule 4 for opens: a pixel fetched before anyone could have read the message."""
    if sent_at is None or at - sent_at >= OPEN_TOO_SOON:
        return None
    after = (at - sent_at).total_seconds()
    if after < 0:
        return "pixel fetched before delivery"
    return f"pixel fetched {int(after * 10) / 10:.1f} s after delivery"


Ref = TypeVar("Ref", bound=Hashable)  # where a hit is: its batch position, or its stored row


def same_second(clicks: Sequence[tuple[Ref, Hit]]) -> dict[Ref, str]:
    """Rule 5 over one message's clicks (ref, hit): {ref: reason} of every click in a
    one-second window that holds `SAME_SECOND_LINKS` or more distinct links."""
    ordered = sorted(clicks, key=lambda click: click[1].at)
    found: dict[Ref, int] = {}  # ref -> most distinct links seen in one of its windows
    end = 0
    for start, (_, first) in enumerate(ordered):
        end = max(end, start)
        while end < len(ordered) and ordered[end][1].at - first.at < timedelta(seconds=1):
            end += 1
        window = ordered[start:end]
        links = len({hit.link for _, hit in window})
        if links >= SAME_SECOND_LINKS:
            for ref, _ in window:
                found[ref] = max(found.get(ref, 0), links)
    return {ref: f"{links} links clicked in the same second" for ref, links in found.items()}


HONEYPOT_CLICKED = "honeypot link clicked"


def near_honeypot(clicks: Sequence[tuple[Ref, Hit]], honeypot: int) -> dict[Ref, str]:
    """Rule 6 over one message's clicks (ref, hit): {ref: reason} of the honeypot clicks and
    of every click within `AROUND_HONEYPOT` of one of them."""
    bait = [hit.at for _, hit in clicks if hit.link == honeypot]
    found: dict[Ref, str] = {}
    for ref, hit in clicks:
        if hit.link == honeypot:
            found[ref] = HONEYPOT_CLICKED
            continue
        nearest = min(bait, key=lambda at: abs(hit.at - at), default=None)
        if nearest is None or abs(hit.at - nearest) > AROUND_HONEYPOT:
            continue
        found[ref] = near_honeypot_reason(hit.at, nearest)
    return found


def near_honeypot_reason(at: datetime, bait: datetime) -> str:
    """Why a click at `at` is a machine's when the honeypot was clicked at `bait`."""
    side = "before" if at <= bait else "after"
    return f"clicked {int(abs(at - bait).total_seconds())} s {side} the honeypot link"


def near_machine_click(at: datetime, machine_clicks: Sequence[datetime]) -> str | None:
    """Rule 7: why an open at `at` goes with a machine's click on the message, or None."""
    nearest = min(machine_clicks, key=lambda click: abs(at - click), default=None)
    if nearest is None or abs(at - nearest) > AROUND_MACHINE_CLICK:
        return None
    apart = int(abs(at - nearest).total_seconds())
    if not apart:
        return "pixel fetched in the same second as a machine's click"
    return f"pixel fetched {apart} s {'before' if at < nearest else 'after'} a machine's click"


REFETCHED = "pixel fetched again"


def refetched(at: datetime, last_open: datetime | None) -> str | None:
    """Rule 8: why this fetch is the last open again, or None."""
    if last_open is None or not timedelta(0) <= at - last_open < REFETCH:
        return None
    return f"{REFETCHED} {int((at - last_open).total_seconds())} s after the last open"


@dataclass(frozen=True)
class Judgement:
    verdicts: list[Verdict]  # one per hit of the batch, in order
    relabel: dict[int, str] = field(default_factory=dict)  # stored person's hit id -> why not


def _as_hit(stored: StoredHit, key: str) -> Hit:
    return Hit(stored.kind, key, stored.link, stored.at, "", "", "GET")


def judge(hits: Sequence[Hit], sent_at: Mapping[str, datetime], honeypot: Mapping[str, int],
          stored: Mapping[str, Sequence[StoredHit]] | None = None,
          apple: Container[str] = (),
          last_opens: Mapping[str, datetime] | None = None) -> Judgement:  # fmt: skip
    """Verdicts for a batch. `sent_at`: message key -> when the relay accepted the message;
    `honeypot`: message key -> link index of its hidden link; `stored`: message key -> its
    hits already stored; `apple`: Apple's proxy addresses; `last_opens`: message key -> its
    last open that counts for rule 8 (a person's, or a pixel fetched again) earlier than its
    opens in `stored` and the batch, when those earlier opens are not in `stored`. Any may
    lack a key."""
    reasons: dict[tuple[str, int], str | None] = {}  # ("batch", position) / ("stored", id)
    timelines: dict[str, list[tuple[tuple[str, int], Hit]]] = defaultdict(list)
    for key, earlier in (stored or {}).items():
        for row in earlier:
            reasons["stored", row.id] = row.machine
            timelines[key].append((("stored", row.id), _as_hit(row, key)))
    alone = [_alone(hit, sent_at.get(hit.message_key), apple) for hit in hits]
    fetches = Counter(hit.message_key for hit in hits)
    for position, hit in enumerate(hits):
        key = hit.message_key
        if fetches[key] == 1 and hit.kind == "open" and key not in timelines:
            # The common case, one open and nothing else in reach: only rule 8 can apply.
            if alone[position] is None and last_opens:
                alone[position] = refetched(hit.at, last_opens.get(key))
            continue
        reasons["batch", position] = alone[position]
        timelines[key].append((("batch", position), hit))
    relabel: dict[int, str] = {}

    def decide(ref: tuple[str, int], reason: str | None) -> None:
        if reason is None or reasons[ref] is not None:
            return
        reasons[ref] = reason
        if ref[0] == "stored":
            relabel[ref[1]] = reason

    for key, timeline in timelines.items():
        clicks = [(ref, hit) for ref, hit in timeline if hit.kind == "click"]
        bait = near_honeypot(clicks, honeypot[key]) if key in honeypot else {}
        burst = same_second(clicks)
        for ref, _ in clicks:
            decide(ref, burst.get(ref) or bait.get(ref))
        machine_clicks = [hit.at for ref, hit in clicks if reasons[ref] is not None]
        opens = sorted(((ref, hit) for ref, hit in timeline if hit.kind == "open"),
                       key=lambda item: item[1].at)  # fmt: skip
        last_open = last_opens.get(key) if last_opens else None
        for ref, hit in opens:
            decide(ref, near_machine_click(hit.at, machine_clicks))
            if ref[0] == "batch":
                decide(ref, refetched(hit.at, last_open))
            reason = reasons[ref]
            counts = reason is None or reason.startswith(REFETCHED)
            if counts and (last_open is None or last_open < hit.at):  # `last_opens` may be later
                last_open = hit.at
    for (where, position), reason in reasons.items():
        if where == "batch":
            alone[position] = reason
    return Judgement(list(map(_verdict, alone)), relabel)


@functools.lru_cache(maxsize=4096)  # a batch gives a few dozen distinct reasons, many times
def _verdict(reason: str | None) -> Verdict:
    return Verdict(machine=reason is not None, reason=reason)


def _alone(hit: Hit, sent_at: datetime | None, apple: Container[str]) -> str | None:
    """Rules 1-4: what the hit shows by itself."""
    if hit.kind == "open":
        if hit.ip and apple_mail_agent(hit.user_agent) and hit.ip in apple:  # rule 1, by address
            return image_proxy(hit.user_agent, hit.ip, apple)
        return _agent_alone("open", hit.user_agent, hit.method) or open_too_soon(hit.at, sent_at)
    return _agent_alone("click", hit.user_agent, hit.method) or too_soon(hit.at, sent_at)


@functools.lru_cache(maxsize=4096)  # a batch holds a few agents, many times
def _agent_alone(kind: str, user_agent: str, method: str) -> str | None:
    """Rules 1-3 as far as the user agent and the method tell (not Apple's addresses)."""
    if kind == "open":
        return image_proxy(user_agent) or scanner(user_agent) or head_request(method)
    return scanner(user_agent) or head_request(method)


def classify(hits: Sequence[Hit], sent_at: Mapping[str, datetime],
             honeypot: Mapping[str, int]) -> list[Verdict]:  # fmt: skip
    """One verdict per hit, in order, judged by the batch alone (see `judge`)."""
    return judge(hits, sent_at, honeypot).verdicts
