"""Is the relay working? Each reply of a relay session is watched: a failure of the relay itself
(no answer, or a refusal of the sender rather than of one recipient) is counted for /metrics,
and /healthz reports a relay whose last attempts all failed.

Kept per relay (host and port) in this process: `mailer run` delivers and serves /healthz in
the same process, so the endpoint knows what its own sessions saw. Other processes (`mailer
serve`, which sends nothing, a second `mailer run`) learn of a relay that does not answer from
the table relays_down (delivery/relay_board.py): `recorded_down` makes it failing in each of
them once it has stayed down for FAILING_AFTER attempts. A relay that answers but refuses the
sender is a streak this process saw only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailer.config import Relay
from mailer.delivery.replies import SmtpReply, judge
from mailer.metrics import RELAY_ERRORS, RelayErrorKind

if TYPE_CHECKING:
    from mailer.delivery.relays import Down

FAILING_AFTER = 3  # attempts in a row that failed: the relay is failing (a single one is a blip)


@dataclass(frozen=True)
class RelayStanding:
    failures_in_row: int = 0
    last_failure: str | None = None  # the last failing reply, while failures_in_row > 0
    down_since: datetime | None = None  # from relays_down: recorded down by some process

    @property
    def failing(self) -> bool:
        return self.failures_in_row >= FAILING_AFTER


def relay_failure(reply: SmtpReply) -> RelayErrorKind | None:
    """Whether a reply says the relay failed (and how), rather than this message's recipient:
    a 5.1.1 unknown mailbox or a 4xx greylisting at RCPT is the relay doing its job."""
    if reply.code is None:
        return "no_answer"
    return "refused" if judge(reply).relay_refusal else None


def standing_after(standing: RelayStanding, reply: SmtpReply) -> RelayStanding:
    """The relay's standing after one more reply: any working reply clears the streak."""
    if relay_failure(reply) is None:
        return RelayStanding()
    return RelayStanding(standing.failures_in_row + 1, f"{reply} (at {reply.stage})")


def recorded_down(standing: RelayStanding | None, down: Down | None) -> RelayStanding | None:
    """The relay's standing as /healthz reports it: this process's own streak, or, when the
    relay is recorded `down` (relays_down) for FAILING_AFTER attempts or more (the failure
    that took it down and each failed probe since, by any process), failing since then."""
    if down is None or down.failures < FAILING_AFTER or (standing and standing.failing):
        return standing
    return RelayStanding(down.failures, down.reason, down.since)


_standings: dict[tuple[str, int], RelayStanding] = {}
_lock = threading.Lock()  # sessions reply in the event loop; /healthz may read from a thread


def watch(smtp: Relay, reply: SmtpReply) -> None:
    """Take note of one reply of the relay `smtp` names."""
    if (kind := relay_failure(reply)) is not None:
        RELAY_ERRORS.labels(reply.stage, kind).inc()
    with _lock:
        key = (smtp.host, smtp.port)
        _standings[key] = standing_after(_standings.get(key, RelayStanding()), reply)


def standing(smtp: Relay) -> RelayStanding | None:
    """What this process saw of the relay `smtp` names; None before its first attempt."""
    with _lock:
        return _standings.get((smtp.host, smtp.port))
