"""Several relays in priority order: [smtp] first, then its [smtp.fallbacks.NAME] as written.

A relay that refuses the connection, times out, drops it, answers 421 or fails the greeting,
TLS or AUTH is down: the message goes at once to the next relay that is up, and the down one
is skipped until its probe (30 s after it went down, the wait doubling at each failed probe up
to 5 min): the first message after that tries it again. A refused recipient (550) or a 4xx at
RCPT is that recipient's answer: no failover.

Kept per relay (host and port) in the database, shared by every process (relay_board.py): a
relay one `mailer run` found down is skipped by the others, and one process at a time probes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailer.config import Settings
from mailer.delivery.relay import Envelope, RelaySession
from mailer.delivery.replies import SmtpReply

if TYPE_CHECKING:
    from mailer.delivery.relay_board import RelayBoard

# The reason of a message deferred because no relay took it (every relay down): when one comes
# back, such messages are due at once (relay_board.come_back), not after their own backoff.
NO_RELAY = "no relay takes mail"
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


def deferral_reason(reply: SmtpReply) -> str:
    """Why a message is deferred after `reply`, the last relay's answer: no relay took it
    (the failover tried every relay up, so every relay is down), or its recipient's 4xx."""
    if takes_relay_down(reply):
        return f"{NO_RELAY} (at {reply.stage})"
    return f"temporary failure at {reply.stage}"


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


class FailoverSession:
    """One sender's sessions, one per relay (opened when first used), and the failover: a
    message the relay in use cannot take goes to the next relay at once."""

    def __init__(self, settings: Settings, passwords: dict[str, str | None],
                 board: RelayBoard) -> None:  # fmt: skip
        self.settings = settings
        self.names = [name for name, _relay in settings.relays()]
        self.passwords = passwords
        self.board = board
        self.sessions: dict[str, RelaySession] = {}

    async def send(self, envelope_from: str, recipient: str, wire: bytes, smtputf8: bool,
                   now: datetime,
                   then: Envelope | None = None) -> tuple[str, SmtpReply]:  # fmt: skip
        """The relay that answered last, and its answer. `then`: the message this sender
        sends next, announced to the relay that takes this one (RelaySession.send)."""
        answered: tuple[str, SmtpReply] | None = None
        downs = self.board.downs()
        for name in order_to_try(self.names, downs, now):
            probing = name in downs and downs[name].probe_at <= now
            if probing and not await self.board.take_probe(name, now):
                continue  # another session or process probes it: not this message
            reply = await self._session(name).send(envelope_from, recipient, wire, smtputf8,
                                                   then)  # fmt: skip
            answered = name, reply
            if not await self.board.note(name, reply, now, probing):
                break
        if answered is None:  # every relay down, the probes due taken by others
            name = order_to_try(self.names, self.board.downs(), now)[0]
            reply = await self._session(name).send(envelope_from, recipient, wire, smtputf8)
            await self.board.note(name, reply, now, False)
            answered = name, reply
        return answered

    def _session(self, name: str) -> RelaySession:
        if name not in self.sessions:
            self.sessions[name] = RelaySession(self.settings, self.passwords[name], name)
        return self.sessions[name]

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()


def down_news(settings: Settings, found: dict[str, Down]) -> list[str]:
    """What /healthz says while a fallback stands in: each relay `found` down, and what is
    used."""
    names = [name for name, _relay in settings.relays()]
    if len(names) < 2:
        return []  # a single relay failing is relay_watch's "relay_failing"
    up = [name for name in names if name not in found]
    instead = (f"mail goes through {up[0]}" if up
               else "no relay takes mail: messages wait for their retry, or go as soon as a "
                    "relay answers again")  # fmt: skip
    return [f"relay {name} down since {down.since:%Y-%m-%d %H:%M:%S} UTC: {down.reason}; "
            f"{instead}; probed again at {down.probe_at:%H:%M:%S}"
            for name, down in found.items()]  # fmt: skip
