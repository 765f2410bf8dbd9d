"""What a relay's answer means for the message: sent, try again later, or failed (and whether
the address must never be mailed again). Pure functions over the reply, tested without SMTP."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Outcome = Literal["sent", "retry", "failed"]
Stage = Literal["connect", "mail", "rcpt", "data"]

# RFC 3463 enhanced status codes that say the mailbox itself is gone or unusable for good:
# bad mailbox / bad domain / bad syntax / moved, no forwarding / domain accepts no mail (RFC
# 7505 null MX) / mailbox disabled. A full mailbox (5.2.2) is not among them: it may empty.
HARD_BOUNCES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"})
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class SmtpReply:
    code: int | None  # None: no reply at all (connection refused, dropped, timed out)
    text: str
    stage: Stage

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    hard_bounce: bool = False  # suppress the address
    # The relay refused us, not this recipient (auth, policy, blocked IP, unreachable): many
    # of these in a row pause the campaign instead of failing the whole list.
    relay_refusal: bool = False


def enhanced_status(text: str) -> str | None:
    """`5.1.1` from `5.1.1 <bob@example.com>: Recipient address rejected`."""
    match = _ENHANCED.match(text.strip())
    return ".".join(match.groups()) if match else None


def judge(reply: SmtpReply) -> Verdict:
    if reply.code is not None and 200 <= reply.code < 300:
        return Verdict("sent")
    if reply.code is None or reply.code < 500 or reply.stage in ("connect", "mail"):
        # 4xx, or no answer: nothing was accepted, so trying again is safe. Refused before a
        # recipient was named (greeting, TLS, AUTH, MAIL FROM): the relay's set-up is at
        # fault, not this message, which waits for the relay to be fixed.
        return Verdict("retry", relay_refusal=reply.stage in ("connect", "mail"))
    status = enhanced_status(reply.text)
    if reply.stage == "rcpt" and status in HARD_BOUNCES:
        return Verdict("failed", hard_bounce=True)
    # 5.7.x is policy (blocked IP, sender not allowed): the relay refuses us, not the address.
    return Verdict("failed", relay_refusal=status is not None and status.startswith("5.7."))


@dataclass(frozen=True)
class RetryPolicy:
    first: timedelta  # wait after the first temporary failure
    longest: timedelta  # never wait longer than this between attempts
    give_up_after: timedelta  # counted from when the message was queued


def next_attempt(policy: RetryPolicy, attempts: int, queued_at: datetime, now: datetime,
                 rng: random.Random) -> datetime | None:  # fmt: skip
    """When to try again after `attempts` failed attempts, or None to give up.

    Exponential backoff with jitter (each wait drawn between half and all of the doubled
    delay), so that messages deferred together do not all come back in the same second.
    """
    ceiling = min(policy.first * (1 << min(max(attempts - 1, 0), 30)), policy.longest)
    wait = ceiling * rng.uniform(0.5, 1.0)
    if now + wait - queued_at > policy.give_up_after:
        return None
    return now + wait
