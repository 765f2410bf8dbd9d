"""The form's limit per client IP, shared by every `mailer serve` through the database (a token
bucket of store/limits.py): 5 posts, then one every 12 seconds.

An IPv6 client is counted by its /64: one home or one server gets a /64, so counting addresses
would give it 2^64 budgets. A bucket expires by time only (deleted once full again), so no
number of other addresses can push an address's bucket out and reset its count.
"""

from __future__ import annotations

import ipaddress
import math

from sqlalchemy import Engine

from mailer.store.limits import Limit, SharedLimits

PER_IP = Limit(rate=5 / 60, burst=5)  # form posts per second, and saved up, per client


def bucket_of(ip: str, kind: str = "form-ip") -> str:
    """The bucket an address counts in for `kind`: IPv4 by address, IPv6 by its /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:  # not an address (a test client, a unix socket): counted as written
        return f"{kind}:{ip[:100]}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:203.0.113.7 is 203.0.113.7
            return f"{kind}:{address.ipv4_mapped}"
        return f"{kind}:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"{kind}:{address}"


class PerIpLimit:
    def __init__(self, engine: Engine) -> None:
        self.limits = SharedLimits(engine)

    def wait(self, ip: str, now: float) -> int:
        """Whole seconds until `ip` may post again: 0 means now, and its token is taken. One
        round trip."""
        bucket = bucket_of(ip)
        taken = self.limits.take({bucket: (PER_IP, 1)}, now)[bucket]
        return 0 if taken.granted else max(1, math.ceil(round(taken.wait, 6)))
