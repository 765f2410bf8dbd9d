"""The signature of an outgoing webhook, and how a receiver checks it. `verify` uses only the
standard library: the README prints it for receivers to copy.

    Mailer-Webhook-Id: <the event's id, the same on every retry>
    Mailer-Webhook-Timestamp: <unix seconds when this attempt was signed>
    Mailer-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>
"""

from __future__ import annotations

import hashlib
import hmac
import time

REPLAY_WINDOW = 300  # seconds: an older (or a future) timestamp is refused


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The Mailer-Signature header's value."""
    signed = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


def verify(secret: bytes, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """True when `body` was signed with `secret` less than 5 minutes ago. `headers`: the
    request's, names lowercased; `body`: the raw bytes, before any JSON parsing."""
    timestamp = headers.get("mailer-webhook-timestamp", "")
    signature = headers.get("mailer-signature", "")
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > REPLAY_WINDOW:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    # A header may carry several signatures (during a secret's rotation): any one will do.
    return any(hmac.compare_digest(part.strip(), "v1=" + expected)
               for part in signature.split(","))  # fmt: skip
