"""Telling people from machines (tracking/bots.py), with user agents seen in the wild."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from hypothesis import given
from hypothesis import strategies as st

from mailer.tracking.apple import parse
from mailer.tracking.bots import (
    AROUND_HONEYPOT,
    AROUND_MACHINE_CLICK,
    HONEYPOT_CLICKED,
    OPEN_TOO_SOON,
    TOO_SOON,
    classify,
    judge,
)
from mailer.tracking.hits import Hit, StoredHit, Verdict

SENT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = SENT + timedelta(hours=2)

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4.1 Safari/605.1.15"
)
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80"
)
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
OUTLOOK = "Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Outlook 16.0.17531; Pro)"
CUBOT_PHONE = (
    "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36"
)
APPLE_MPP = "Mozilla/5.0"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
BARRACUDA = "Barracuda Sentinel (EE)"
BING_PREVIEW = (
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b"
)
DESKTOP_BROWSERS = [CHROME, FIREFOX, SAFARI, EDGE]
HUMAN = Verdict(machine=False, reason=None)


def click(
    link: int, at: datetime = LATER, user_agent: str = CHROME, key: str = "m1", method: str = "GET"
) -> Hit:
    return Hit("click", key, link, at, user_agent, "198.51.100.7", method)


def open_(at: datetime = LATER, user_agent: str = CHROME, key: str = "m1") -> Hit:
    return Hit("open", key, None, at, user_agent, "198.51.100.7", "GET")


def reasons(hits: list[Hit], honeypot: dict[str, int] | None = None) -> list[str | None]:
    return [v.reason for v in classify(hits, {"m1": SENT, "m2": SENT}, honeypot or {})]


def test_apple_mail_privacy_protection_open_is_a_machine() -> None:
    assert reasons([open_(user_agent=APPLE_MPP)]) == ["Apple Mail Privacy Protection"]


def test_yahoo_proxy_open_is_a_prefetch_machine() -> None:
    assert reasons([open_(user_agent=YAHOO_PROXY)]) == ["Yahoo Mail proxy prefetch"]


def test_gmail_proxy_open_is_a_person_soon_after_delivery() -> None:
    hits = [open_(user_agent=GMAIL_PROXY), open_(SENT + OPEN_TOO_SOON, GMAIL_PROXY, key="m2")]
    assert classify(hits, {"m1": SENT, "m2": SENT}, {}) == [HUMAN, HUMAN]


def test_real_mail_clients_and_browsers_are_people() -> None:
    hits = [
        open_(user_agent=IPHONE_MAIL),
        open_(LATER + timedelta(hours=1), user_agent=OUTLOOK),
        click(0, user_agent=CHROME),
        click(1, LATER + timedelta(minutes=5), IPHONE_MAIL),
        click(2, LATER + timedelta(minutes=9), CUBOT_PHONE),
    ]
    assert classify(hits, {"m1": SENT}, {}) == [HUMAN] * 5


def test_known_scanners_are_machines_for_opens_and_clicks() -> None:
    headless = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/124.0.6367.60 Safari/537.36"
    )
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    agents = [BARRACUDA, BING_PREVIEW, "python-requests/2.31.0", "curl/8.4.0",
              "Go-http-client/1.1", headless, googlebot, YAHOO_PROXY, "", "MIMECAST"]  # fmt: skip
    # One click a minute: no burst, so only the user agent speaks.
    clicks = [click(n, LATER + timedelta(minutes=n), agent) for n, agent in enumerate(agents)]
    assert reasons([open_(user_agent=BARRACUDA), *clicks]) == [
        "link scanner (Barracuda)",
        "link scanner (Barracuda)",
        "link scanner (Microsoft BingPreview)",
        "HTTP library (python-requests)",
        "command-line tool (curl)",
        "HTTP library (Go-http-client)",
        "headless browser (HeadlessChrome)",
        "crawler ('bot' in user agent)",
        "link fetch (Yahoo Mail Proxy)",
        "no user agent",
        "link scanner (Mimecast)",
    ]


def test_bare_mozilla_click_is_a_machine_but_not_called_apple() -> None:
    assert reasons([click(0, user_agent=APPLE_MPP)]) == ["bare 'Mozilla/5.0' user agent"]


def test_head_request_is_a_machine_for_opens_and_clicks() -> None:
    hits = [click(0, method="HEAD"), Hit("open", "m1", None, LATER, CHROME, "192.0.2.1", "HEAD")]
    assert reasons(hits) == ["HEAD request", "HEAD request"]


def test_click_within_ten_seconds_of_delivery_is_a_machine() -> None:
    hits = [
        click(0, SENT + timedelta(seconds=3)),
        click(1, SENT + TOO_SOON - timedelta(milliseconds=1), key="m2"),
        click(2, SENT + TOO_SOON, key="m3"),
        click(3, SENT - timedelta(seconds=2), key="m4"),
    ]
    sent_at = {"m1": SENT, "m2": SENT, "m3": SENT, "m4": SENT}
    assert [v.reason for v in classify(hits, sent_at, {})] == [
        "clicked 3 s after delivery",
        "clicked 9 s after delivery",
        None,
        "clicked before delivery",
    ]


def test_click_of_a_message_without_send_time_has_no_timing_rule() -> None:
    assert classify([click(0, SENT + timedelta(seconds=1), key="unknown")], {}, {}) == [HUMAN]


def test_pixel_fetched_within_two_seconds_of_delivery_is_a_sandbox() -> None:
    hits = [
        open_(SENT + timedelta(milliseconds=200)),
        open_(SENT + OPEN_TOO_SOON - timedelta(milliseconds=1), key="m2"),
        open_(SENT + OPEN_TOO_SOON, key="m3"),
        open_(SENT - timedelta(seconds=1), key="m4"),
        open_(SENT, key="unknown"),
    ]
    sent_at = {"m1": SENT, "m2": SENT, "m3": SENT, "m4": SENT}
    assert [v.reason for v in classify(hits, sent_at, {})] == [
        "pixel fetched 0.2 s after delivery",
        "pixel fetched 1.9 s after delivery",
        None,
        "pixel fetched before delivery",
        None,
    ]


def test_three_links_of_one_message_in_one_second_are_all_machines() -> None:
    at = LATER + timedelta(milliseconds=900)  # the second straddles a clock tick: still caught
    burst = [
        click(0, at),
        click(1, at + timedelta(milliseconds=200)),
        click(2, at + timedelta(milliseconds=400)),
        click(3, at + timedelta(milliseconds=950)),
    ]
    alone = click(4, at + timedelta(seconds=5))
    other_message = click(5, at, key="m2")
    burst_reasons = ["4 links clicked in the same second"] * 4
    assert reasons([*burst, alone, other_message]) == [*burst_reasons, None, None]


def test_same_link_clicked_three_times_in_a_second_is_a_person() -> None:
    hits = [click(0, LATER + timedelta(milliseconds=ms)) for ms in (0, 150, 300)]
    assert reasons(hits) == [None, None, None]


def test_two_links_in_a_second_is_a_person() -> None:
    assert reasons([click(0), click(1, LATER + timedelta(milliseconds=300))]) == [None, None]


def test_honeypot_click_marks_clicks_of_that_message_within_a_minute() -> None:
    bait = LATER
    hits = [
        click(0, bait - AROUND_HONEYPOT),
        click(1, bait - timedelta(seconds=12)),
        click(7, bait),
        click(2, bait + timedelta(seconds=45)),
        click(3, bait + AROUND_HONEYPOT + timedelta(seconds=1)),
        click(4, bait - timedelta(minutes=5)),
        click(1, bait, key="m2"),
        open_(bait + timedelta(seconds=5), key="m3"),
    ]
    assert reasons(hits, {"m1": 7, "m2": 7}) == [
        "clicked 60 s before the honeypot link",
        "clicked 12 s before the honeypot link",
        "honeypot link clicked",
        "clicked 45 s after the honeypot link",
        None,
        None,
        None,
        None,
    ]


def test_no_honeypot_known_means_no_honeypot_rule() -> None:
    assert reasons([click(7), click(1, LATER + timedelta(seconds=5))]) == [None, None]


def test_first_rule_in_order_gives_the_reason() -> None:
    head_scanner = click(0, SENT + timedelta(seconds=1), BARRACUDA, method="HEAD")
    head_soon = click(1, SENT + timedelta(seconds=2), method="HEAD")
    soon_in_burst = [click(n, SENT + timedelta(seconds=3)) for n in (2, 3, 4)]
    mpp_head = Hit("open", "m1", None, LATER, APPLE_MPP, "192.0.2.1", "HEAD")
    assert reasons([head_scanner, head_soon, *soon_in_burst, mpp_head], {"m1": 3}) == [
        "link scanner (Barracuda)",
        "HEAD request",
        "clicked 3 s after delivery",
        "clicked 3 s after delivery",
        "clicked 3 s after delivery",
        "Apple Mail Privacy Protection",
    ]


def test_verdicts_keep_the_order_of_the_hits() -> None:
    hits = [
        click(0),
        open_(user_agent=APPLE_MPP),
        click(1, LATER + timedelta(hours=1), method="HEAD"),
        open_(),
        click(2, LATER + timedelta(hours=2), BARRACUDA),
    ]
    assert reasons(hits) == [
        None,
        "Apple Mail Privacy Protection",
        "HEAD request",
        None,
        "link scanner (Barracuda)",
    ]
    assert reasons(hits[::-1]) == reasons(hits)[::-1]


def test_empty_batch_gives_no_verdicts() -> None:
    assert classify([], {}, {}) == []


ANY_AGENT = st.sampled_from(
    [*DESKTOP_BROWSERS, IPHONE_MAIL, APPLE_MPP, GMAIL_PROXY, BARRACUDA, "curl/8.4.0", ""]
)
# Other hits of the batch, placed around the person's: (kind, message, link, ms away, UA, method)
other_hits = st.tuples(
    st.sampled_from(["open", "click"]),
    st.sampled_from(["m1", "m2", "m3"]),
    st.integers(0, 5),
    st.one_of(st.integers(-1_500, 1_500), st.integers(-120_000, 120_000)),  # many in its second
    ANY_AGENT,
    st.sampled_from(["GET", "HEAD"]),
)


@given(
    others=st.lists(other_hits, max_size=40),
    person_at=st.integers(int(TOO_SOON.total_seconds()), 4000),
    person_link=st.integers(0, 5),
    person_agent=st.sampled_from(DESKTOP_BROWSERS),
    person_kind=st.sampled_from(["open", "click"]),
    place=st.integers(0, 40),
    bait=st.integers(0, 5),
)
def test_one_verdict_per_hit_and_a_lone_browser_get_is_always_a_person(
    others: list[tuple[Literal["open", "click"], str, int, int, str, str]],
    person_at: int,
    person_link: int,
    person_agent: str,
    person_kind: str,
    place: int,
    bait: int,
) -> None:
    at = SENT + timedelta(seconds=person_at)
    # Alone in its second and far from any honeypot click: no other hit of m1 within 61 s.
    near = AROUND_HONEYPOT + timedelta(seconds=1)
    batch = [
        Hit(kind, key, link if kind == "click" else None, at + timedelta(milliseconds=ms),
            agent, "203.0.113.9", method)
        for kind, key, link, ms, agent, method in others
        if key != "m1" or abs(timedelta(milliseconds=ms)) > near
    ]  # fmt: skip
    link = person_link if person_link != bait else (bait + 1) % 6
    person = click(link, at, person_agent) if person_kind == "click" else open_(at, person_agent)
    place = min(place, len(batch))
    hits = [*batch[:place], person, *batch[place:]]
    verdicts = classify(hits, {"m1": SENT, "m2": SENT}, {"m1": bait, "m3": bait})
    assert len(verdicts) == len(hits)
    assert all(isinstance(v, Verdict) and v.machine == (v.reason is not None) for v in verdicts)
    assert verdicts[place] == HUMAN


def stored(id_: int, kind: Literal["open", "click"], at: datetime, link: int | None = None,
           machine: str | None = None) -> StoredHit:  # fmt: skip
    return StoredHit(id_, kind, link, at, machine)


def test_a_burst_completed_by_a_later_batch_turns_the_stored_clicks_into_a_machines() -> None:
    earlier = [stored(1, "click", LATER, 0), stored(2, "click", LATER + timedelta(
        milliseconds=200), 1)]  # fmt: skip
    third = click(2, LATER + timedelta(milliseconds=400))
    judged = judge([third], {"m1": SENT}, {}, {"m1": earlier})
    assert [v.reason for v in judged.verdicts] == ["3 links clicked in the same second"]
    assert judged.relabel == {1: "3 links clicked in the same second",
                              2: "3 links clicked in the same second"}  # fmt: skip


def test_clicks_after_a_stored_honeypot_click_are_a_machines_and_before_it_relabelled() -> None:
    before = "clicked 30 s before the honeypot link"
    earlier = [stored(1, "click", LATER - timedelta(seconds=30), 0, before),
               stored(2, "click", LATER, 7, HONEYPOT_CLICKED),
               stored(3, "click", LATER - timedelta(minutes=5), 1)]  # fmt: skip
    later = [click(1, LATER + timedelta(seconds=20)), click(2, LATER + timedelta(minutes=2))]
    judged = judge(later, {"m1": SENT}, {"m1": 7}, {"m1": earlier})
    assert [v.reason for v in judged.verdicts] == ["clicked 20 s after the honeypot link", None]
    assert judged.relabel == {}  # stored 1 was judged when the honeypot click was stored
    person = stored(1, "click", LATER - timedelta(seconds=30), 0)
    bait_later = judge([click(7, LATER)], {"m1": SENT}, {"m1": 7}, {"m1": [person]})
    assert bait_later.relabel == {1: before}


def test_an_open_beside_a_machines_click_is_a_machines_whichever_batch_holds_it() -> None:
    scanner_click = click(0, LATER, BARRACUDA)
    pixel = open_(LATER + timedelta(seconds=3))
    assert reasons([scanner_click, pixel]) == [
        "link scanner (Barracuda)",
        "pixel fetched 3 s after a machine's click",
    ]
    earlier_open = [stored(1, "open", LATER - timedelta(seconds=2))]
    judged = judge([scanner_click], {"m1": SENT}, {}, {"m1": earlier_open})
    assert judged.relabel == {1: "pixel fetched 2 s before a machine's click"}
    far = open_(LATER + AROUND_MACHINE_CLICK + timedelta(seconds=1))
    assert reasons([scanner_click, far]) == ["link scanner (Barracuda)", None]


def test_a_pixel_fetched_again_within_a_minute_is_the_same_open() -> None:
    fetches = [open_(LATER + timedelta(seconds=2 * n)) for n in range(25)]
    got = reasons(fetches)
    assert got[0] is None and got[1:] == [
        f"pixel fetched again {2} s after the last open"] * 24  # fmt: skip
    reopen = open_(LATER + timedelta(seconds=48 + 61))  # a minute after the last fetch
    assert reasons([*fetches, reopen])[-1] is None
    across = judge([open_(LATER + timedelta(seconds=30))], {"m1": SENT}, {},
                   {"m1": [stored(1, "open", LATER)]})  # fmt: skip
    assert [v.reason for v in across.verdicts] == ["pixel fetched again 30 s after the last open"]
    assert across.relabel == {}


def test_the_last_open_before_the_stored_ones_read_continues_the_refetch_chain() -> None:
    last = {"m1": LATER}
    judged = judge([open_(LATER + timedelta(seconds=59)), open_(LATER + timedelta(seconds=200))],
                   {"m1": SENT}, {}, {}, last_opens=last)  # fmt: skip
    assert [v.reason for v in judged.verdicts] == [
        "pixel fetched again 59 s after the last open", None]  # fmt: skip


def test_a_sandbox_fetch_does_not_swallow_the_persons_open_after_it() -> None:
    sandbox = open_(SENT + timedelta(milliseconds=200))
    person = open_(SENT + timedelta(seconds=40), IPHONE_MAIL)
    assert reasons([sandbox, person]) == ["pixel fetched 0.2 s after delivery", None]


def test_apple_mail_from_apples_proxy_addresses_is_privacy_protection() -> None:
    ranges = parse("# Apple\n17.0.0.0/8\n172.224.226.0/27,GB,GB-EN,London,\nnonsense\n", "t")
    mail = Hit("open", "m1", None, LATER, IPHONE_MAIL, "17.58.1.2", "GET")
    relay_mail = Hit("open", "m2", None, LATER, IPHONE_MAIL, "172.224.226.9", "GET")
    safari = Hit("open", "m3", None, LATER, SAFARI, "172.224.226.9", "GET")
    home_mail = Hit("open", "m4", None, LATER, IPHONE_MAIL, "198.51.100.7", "GET")
    verdicts = judge([mail, relay_mail, safari, home_mail], {}, {}, apple=ranges).verdicts
    assert [v.reason for v in verdicts] == [
        "Apple Mail Privacy Protection (Apple proxy address)",
        "Apple Mail Privacy Protection (Apple proxy address)",
        None,
        None,
    ]
    assert "172.224.226.32" not in ranges and "::ffff:17.1.1.1" in ranges and "x" not in ranges
