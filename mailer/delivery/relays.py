"""Several relays in priority order: [smtp] first, then its [smtp.fallbacks.NAME] as written.

A relay that refuses the connection, times out, drops it, answers 421 or fails the greeting,
TLS or AUTH is down: the message goes at once to the next relay that is up, and the down one
is skipped until its probe (30 s after it went down, the wait doubling at each failed probe up
to 5 min): the first message after that tries it again. A refused recipient (550) or a 4xx at
RCPT is that recipient's answer: no failover.

Kept per relay (host and port) in this process, like relay_watch: each `mailer run` finds a
down relay by itself, at the cost of one failed attempt per session and probe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailer.config import Relay, Settings
from mailer.delivery import relay_watch
from mailer.delivery.relay import RelaySession
from mailer.delivery.replies import SmtpReply
from mailer.logs import logger

FIRST_PROBE = timedelta(seconds=30)  # a relay down is tried again after this long, then
LONGEST_PROBE = timedelta(minutes=5)  # twice as long after each failed probe, up to this


@dataclass(frozen=True)
class Down:
    """A relay found down: since when, why, and when to try it again."""

    since: datetime
    probe_at: datetime
    failures: int  # the failure that took it down and every failed probe since
    reason: str


def takes_relay_down(reply: SmtpReply) -> bool:
    """Whether a reply says the relay cannot take mail now, rather than this recipient: no
    answer (refused, timed out, dropped), 421 (RFC 5321 4.2.2: closing the channel), or a
    refusal before any message was begun (greeting, TLS, AUTH)."""
    return reply.code is None or reply.code == 421 or reply.stage == "connect"


def down_after(down: Down | None, reply: SmtpReply, now: datetime) -> Down:
    """The relay's state after one more failure: the wait before its probe doubles."""
    failures = down.failures + 1 if down else 1
    wait = min(FIRST_PROBE * (1 << min(failures - 1, 20)), LONGEST_PROBE)
    return Down(down.since if down else now, now + wait, failures, f"{reply} (at {reply.stage})")


def order_to_try(names: list[str], downs: dict[str, Down], now: datetime) -> list[str]:
    """The relays to try for one message, best first: those up or due a probe, in priority
    order. When every relay is down and none is due, the one probed soonest: the message
    then waits for its retry as it would with a single relay."""
    ready = [name for name in names if name not in downs or downs[name].probe_at <= now]
    return ready or [min(names, key=lambda name: downs[name].probe_at)]


_downs: dict[tuple[str, int], Down] = {}
_lock = threading.Lock()  # sessions reply in the event loop; /healthz may read from a thread


def _key(relay: Relay) -> tuple[str, int]:
    return (relay.host, relay.port)


def downs(settings: Settings) -> dict[str, Down]:
    """The relays of settings this process found down, by name."""
    with _lock:
        return {name: _downs[_key(relay)] for name, relay in settings.relays()
                if _key(relay) in _downs}  # fmt: skip


def note(name: str, relay: Relay, reply: SmtpReply, now: datetime) -> bool:
    """Take note of one reply of the relay `name`; True when it says the relay is down."""
    relay_watch.watch(relay, reply)
    key, down = _key(relay), takes_relay_down(reply)
    with _lock:
        was = _downs.get(key)
        if not down:
            _downs.pop(key, None)
        elif was is None or was.probe_at <= now:
            # Sessions that failed together before it was known down count once, not each.
            _downs[key] = down_after(was, reply, now)
        news = _downs.get(key) if _downs.get(key) is not was else None
    if not down and was is not None:
        logger.info(f"relay {name} is up again (down since {was.since:%Y-%m-%d %H:%M:%S})")
    if news is not None:
        wait = int((news.probe_at - now).total_seconds())
        logger.warning(f"relay {name} is down: {news.reason}; probed again in {wait} s")
    return down


def forget() -> None:
    """Forget every relay's state (tests)."""
    with _lock:
        _downs.clear()


class FailoverSession:
    """One sender's sessions, one per relay (opened when first used), and the failover: a
    message the relay in use cannot take goes to the next relay at once."""

    def __init__(self, settings: Settings, passwords: dict[str, str | None]) -> None:
        self.settings = settings
        self.relays = dict(settings.relays())
        self.passwords = passwords
        self.sessions: dict[str, RelaySession] = {}

    async def send(self, envelope_from: str, recipient: str, wire: bytes, smtputf8: bool,
                   now: datetime) -> tuple[str, SmtpReply]:  # fmt: skip
        """The relay that answered last, and its answer."""
        names = order_to_try(list(self.relays), downs(self.settings), now)
        for name in names:
            session = self.sessions.get(name)
            if session is None:
                session = RelaySession(self.settings, self.passwords[name], name)
                self.sessions[name] = session
            reply = await session.send(envelope_from, recipient, wire, smtputf8)
            if not note(name, self.relays[name], reply, now):
                break
        return name, reply

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()


def down_news(settings: Settings, now: datetime) -> list[str]:
    """What /healthz says while a fallback stands in: each relay down, and what is used."""
    names = [name for name, _relay in settings.relays()]
    if len(names) < 2:
        return []  # a single relay failing is relay_watch's "relay_failing"
    found = downs(settings)
    up = [name for name in names if name not in found]
    instead = (f"mail goes through {up[0]}" if up
               else "no relay takes mail: messages wait for their retry")  # fmt: skip
    return [f"relay {name} down since {down.since:%Y-%m-%d %H:%M:%S} UTC: {down.reason}; "
            f"{instead}; probed again at {down.probe_at:%H:%M:%S}"
            for name, down in found.items()]  # fmt: skip


RELAY_UP_HELP = "1 while the relay takes mail, 0 while it is down and skipped (this process)"


class RelayGauges(Collector):
    """mailer_relay_up{relay} for every relay of settings, read when scraped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        found = downs(self.settings)
        up = GaugeMetricFamily("mailer_relay_up", RELAY_UP_HELP, labels=["relay"])
        for name, _relay in self.settings.relays():
            up.add_metric([name], int(name not in found))
        yield up
