"""Rate limits as token buckets: one for all messages, one per recipient domain. Time is
passed in (monotonic seconds), so the arithmetic is tested without waiting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # the most tokens saved up
    tokens: float = field(init=False)
    updated: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def wait(self, now: float) -> float:
        """Seconds until a token is free (0 when one is free now); takes nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Reserve the next token: seconds to wait before using it (0 = now)."""
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def _refill(self, now: float) -> None:
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now


def bucket(rate: float) -> TokenBucket:
    # A second's worth of burst (at least one message): smooth, yet no idle first second.
    return TokenBucket(rate, max(1.0, rate))


class Throttle:
    """The global limit and the per-domain limits of settings [delivery]."""

    def __init__(self, rate: float | None, domain_rates: Mapping[str, float]) -> None:
        self.overall = bucket(rate) if rate else None
        self.domains = {domain.lower(): bucket(r) for domain, r in domain_rates.items()}

    def domain_wait(self, recipient: str, now: float) -> float:
        """How long this recipient's domain is still over its limit (0 = may send now)."""
        limit = self.domains.get(recipient.rpartition("@")[2].lower())
        return limit.wait(now) if limit else 0.0

    def take(self, recipient: str, now: float) -> float:
        """Take a token from the recipient's domain and the overall bucket; return how long
        to wait before sending (the overall limit may ask for a short pause)."""
        limit = self.domains.get(recipient.rpartition("@")[2].lower())
        if limit:
            limit.take(now)
        return self.overall.take(now) if self.overall else 0.0
