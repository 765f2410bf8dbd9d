"""Telling a person's open or click from a machine's: pure functions over one batch of hits.

`classify(hits, sent_at, honeypot)` gives one `Verdict` per hit, in order. The rules, first
match wins (its reason is the one kept):

1. image proxies that fetch without a person (opens only), see `IMAGE_PROXIES`;
2. link scanners, security gateways, HTTP libraries, crawlers, an empty user agent
   (opens and clicks), see `SCANNERS`;
3. a HEAD request;
4. a click less than `TOO_SOON` after the relay accepted the message;
5. `SAME_SECOND_LINKS` or more distinct links of one message clicked within one second:
   all of those clicks;
6. a click on the message's hidden honeypot link, and every click of that message within
   `AROUND_HONEYPOT` of it.

Opens are judged by rules 1-3 only: a person may open a message the moment it arrives.

Image proxies, decided one by one:
- Apple Mail Privacy Protection: machine. Apple's relay loads every image as the message
  reaches the device, read or not, and the device shows the cached copy afterwards. It sends
  the bare user agent `Mozilla/5.0` and nothing more. Its addresses are not used: they are
  iCloud Private Relay's egress, shared with people browsing in Safari, published as a long
  list that changes, and not something a pure function can fetch.
- Gmail (`GoogleImageProxy`, `via ggpht.com`): person. Gmail fetches through its proxy when
  someone opens the message and caches the image afterwards, so the fetch is the first
  open. Later opens never reach us.
- Yahoo Mail (`YahooMailProxy`): machine. Yahoo documents it as a content fetch proxy for
  what messages embed, not as a reader's fetch, so its loads prove no one read the message.
  Some real Yahoo opens are lost this way. As a click it is a link fetch, in `SCANNERS`.
- Outlook and Microsoft 365: no image-proxy rule. `Microsoft Office/16.0 ... Outlook` and
  `ms-office` are the Outlook client showing images to a person. No `OutlookImageProxy`
  user agent is documented. Microsoft's machines (`BingPreview`, Safe Links) are scanners.

Limits: rules 5 and 6 see only the hits of one batch, so a burst that straddles two batches
is judged in parts. A message missing from `sent_at` is spared rule 4 only. Scanners that
copy a browser's user agent get past rules 1-2 and are left to the timing rules 4-6.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from mailer.tracking.hits import Hit, Verdict

TOO_SOON = timedelta(seconds=10)  # no person reads a message and clicks that fast
SAME_SECOND_LINKS = 3  # distinct links of one message clicked within one second
AROUND_HONEYPOT = timedelta(seconds=60)  # a scanner's other clicks on that message

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


def image_proxy(user_agent: str) -> str | None:
    """Rule 1: why this open is an image proxy's prefetch, or None."""
    if user_agent.strip() == APPLE_MPP_USER_AGENT:
        return "Apple Mail Privacy Protection"
    agent = user_agent.lower()
    return next((reason for token, reason in IMAGE_PROXIES if token in agent), None)


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


def same_second(clicks: Sequence[tuple[int, Hit]]) -> dict[int, str]:
    """Rule 5 over one message's clicks (batch position, hit): {position: reason} of every
    click in a one-second window that holds `SAME_SECOND_LINKS` or more distinct links."""
    ordered = sorted(clicks, key=lambda click: click[1].at)
    found: dict[int, int] = {}  # position -> most distinct links seen in one of its windows
    end = 0
    for start, (_, first) in enumerate(ordered):
        end = max(end, start)
        while end < len(ordered) and ordered[end][1].at - first.at < timedelta(seconds=1):
            end += 1
        window = ordered[start:end]
        links = len({hit.link for _, hit in window})
        if links >= SAME_SECOND_LINKS:
            for position, _ in window:
                found[position] = max(found.get(position, 0), links)
    return {
        position: f"{links} links clicked in the same second" for position, links in found.items()
    }


HONEYPOT_CLICKED = "honeypot link clicked"


def near_honeypot(clicks: Sequence[tuple[int, Hit]], honeypot: int) -> dict[int, str]:
    """Rule 6 over one message's clicks (batch position, hit): {position: reason} of the
    honeypot clicks and of every click within `AROUND_HONEYPOT` of one of them."""
    bait = [hit.at for _, hit in clicks if hit.link == honeypot]
    found: dict[int, str] = {}
    for position, hit in clicks:
        if hit.link == honeypot:
            found[position] = HONEYPOT_CLICKED
            continue
        nearest = min(bait, key=lambda at: abs(hit.at - at), default=None)
        if nearest is None or abs(hit.at - nearest) > AROUND_HONEYPOT:
            continue
        found[position] = near_honeypot_reason(hit.at, nearest)
    return found


def near_honeypot_reason(at: datetime, bait: datetime) -> str:
    """Why a click at `at` is a machine's when the honeypot was clicked at `bait`."""
    side = "before" if at <= bait else "after"
    return f"clicked {int(abs(at - bait).total_seconds())} s {side} the honeypot link"


def classify(
    hits: Sequence[Hit], sent_at: Mapping[str, datetime], honeypot: Mapping[str, int]
) -> list[Verdict]:
    """One verdict per hit, in order. `sent_at`: message key -> when the relay accepted the
    message; `honeypot`: message key -> link index of its hidden link. Either may lack a key."""
    clicks: dict[str, list[tuple[int, Hit]]] = defaultdict(list)
    for position, hit in enumerate(hits):
        if hit.kind == "click":
            clicks[hit.message_key].append((position, hit))
    bursts: dict[int, str] = {}
    baited: dict[int, str] = {}
    for key, message_clicks in clicks.items():
        bursts |= same_second(message_clicks)
        if key in honeypot:
            baited |= near_honeypot(message_clicks, honeypot[key])

    verdicts = []
    for position, hit in enumerate(hits):
        reason = (
            (image_proxy(hit.user_agent) if hit.kind == "open" else None)
            or scanner(hit.user_agent)
            or head_request(hit.method)
        )
        if reason is None and hit.kind == "click":
            reason = (
                too_soon(hit.at, sent_at.get(hit.message_key))
                or bursts.get(position)
                or baited.get(position)
            )
        verdicts.append(Verdict(machine=reason is not None, reason=reason))
    return verdicts
