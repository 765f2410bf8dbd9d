"""Signed tokens for links in messages (click, open, unsubscribe, bounce address).

A token is `VERSION.PAYLOAD.MAC`: the payload names what the link is about (a message and a
link index, say) and the MAC is HMAC-SHA256 over the purpose and payload, with a key derived
from the secret key and the version. Rotating keys means raising `tracking.token_version`;
tokens of older versions keep working until `tracking.oldest_token_version` passes them. What
a token points at is always looked up on our side, never read from the request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import lru_cache

from mailer.errors import MailerError

SEPARATOR = "\x1f"
MAC_BYTES = 16  # 128 bits: forging one token takes 2**128 tries
# One spelling per token: ASCII digits without leading zeros, nothing before or after (`\d`
# would take Arabic-Indic or Devanagari digits, `$` a trailing newline, `int()` "01" and " 1").
_SHAPE = re.compile(r"([1-9][0-9]{0,5})\.([A-Za-z0-9_-]{0,400})\.([A-Za-z0-9_-]{22})", re.ASCII)


class TokenError(MailerError):
    """A token that is malformed, forged, of another purpose, or of a retired key version."""


@dataclass(frozen=True)
class TokenKeys:
    secret: bytes
    version: int = 1  # the version new tokens are signed with
    oldest: int = 1  # the oldest version still accepted

    def key(self, version: int) -> bytes:
        return _derived_key(self.secret, version)


@lru_cache(maxsize=64)
def _derived_key(secret: bytes, version: int) -> bytes:
    """The key of one version, derived once (every link of every message needs it)."""
    return hmac.digest(secret, f"mailer token key v{version}".encode(), "sha256")


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _encode(data: bytes) -> str:
    """base64url without padding (binascii directly: every message signs about seven tokens)."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=256)
def _keyed(secret: bytes, version: int, purpose: str) -> hmac.HMAC:
    """The HMAC state after the key and the purpose: copied per token, never updated itself
    (a copy and one update cost a third of hmac.digest, which sets up the key every time)."""
    state = hmac.new(_derived_key(secret, version), digestmod=hashlib.sha256)
    state.update(purpose.encode() + b"\x00")
    return state


def _mac(secret: bytes, version: int, purpose: str, payload: bytes) -> bytes:
    """HMAC-SHA256(key of `version`, purpose NUL payload), cut to MAC_BYTES."""
    state = _keyed(secret, version, purpose).copy()
    state.update(payload)
    return state.digest()[:MAC_BYTES]


def sign(keys: TokenKeys, purpose: str, *fields: str | int) -> str:
    """A token for `purpose` (e.g. "click") carrying `fields`, safe in URLs and addresses."""
    text = SEPARATOR.join(map(str, fields))
    if text.count(SEPARATOR) != len(fields) - 1:
        raise ValueError("token fields may not contain the separator character")
    payload = text.encode("utf-8")
    mac = _mac(keys.secret, keys.version, purpose, payload)
    return f"{keys.version}.{_encode(payload)}.{_encode(mac)}"


def verify(keys: TokenKeys, purpose: str, token: str) -> list[str]:
    """The fields of a genuine token for `purpose`; TokenError for anything else."""
    match = _SHAPE.fullmatch(token)
    if match is None:
        raise TokenError("malformed token")
    version = int(match.group(1))
    if not keys.oldest <= version <= keys.version:
        raise TokenError(f"token version {version} is no longer accepted")
    try:
        payload, mac = _decode(match.group(2)), _decode(match.group(3))
    except ValueError:
        raise TokenError("malformed token") from None
    if _encode(payload) != match.group(2) or _encode(mac) != match.group(3):
        raise TokenError("malformed token")  # one spelling per token: no look-alike variants
    if not hmac.compare_digest(mac, _mac(keys.secret, version, purpose, payload)):
        raise TokenError("forged token")
    return payload.decode("utf-8").split(SEPARATOR)
