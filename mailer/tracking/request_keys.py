"""`Idempotency-Key` on `POST /events`: a website that sends a request again because its answer
was lost (a timeout, a cut connection) sends the same key, and gets the first answer back
instead of its events recorded twice (store/once.py: the key, a digest of the request's body
and the answer, stored in the transaction that records the events, kept a day). The same key
with another body is refused: a key names one request."""

from __future__ import annotations

import hashlib
import re

from mailer.store.once import Once

SHAPE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII without spaces, as most APIs take


def request_key(header: str | None, body: bytes) -> Once | None:
    """The request's work to do once, None without the header; ValueError when the key is not
    1 to 255 printable ASCII characters."""
    if header is None:
        return None
    if not SHAPE.fullmatch(header):
        raise ValueError("Idempotency-Key must be 1 to 255 printable ASCII characters, no spaces")
    return Once(f"events:{header}", hashlib.sha256(body).hexdigest())
