"""Email addresses: validation with email-validator, one normal form, and the keyed hash that
identifies an address after its owner has been erased."""

from __future__ import annotations

import hmac
import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from mailer.contacts.cells import printable, shown

# Local parts that are valid dot-atoms beyond doubt; anything else takes the full check.
_PLAIN_LOCAL_PART = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*\Z")
_MAX_LOCAL_PART, _MAX_ADDRESS = 64, 254  # RFC 5321 4.5.3.1, RFC 3696 errata


class InvalidAddress(ValueError):
    """The text is not an email address; the message says why."""


def normalise_address(text: str) -> str:
    """The address in the form mailer stores and compares: trimmed, lowercased (every mailbox
    provider we deliver to treats local parts case-insensitively), IDN domain in Unicode
    (`xn--bcher-kva.de` and `bücher.de` are the same address). Raise InvalidAddress otherwise.

    Imports check millions of addresses over a few thousand domains, so a plain local part
    with an already-checked domain skips re-validating the domain (the test suite proves both
    paths agree).
    """
    candidate = text.strip()
    local, at, domain = candidate.rpartition("@")
    local = local.lower()
    if at and len(local) <= _MAX_LOCAL_PART and _PLAIN_LOCAL_PART.match(local):
        checked = _checked_domain(domain)
        if checked is not None and len(local) + 1 + checked[1] <= _MAX_ADDRESS:
            return f"{local}@{checked[0]}"
    return _fully_checked(candidate)


@lru_cache(maxsize=65536)
def _checked_domain(domain: str) -> tuple[str, int] | None:
    """(normal form, length in ASCII) of a valid domain, or None when it is not one."""
    try:
        checked = validate_email(f"x@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return str(checked.domain).lower(), len(checked.ascii_domain)


def _fully_checked(candidate: str) -> str:
    if not candidate:
        raise InvalidAddress("the address is empty")
    try:
        checked = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as error:
        why = printable(str(error))
        raise InvalidAddress(f"{shown(candidate)} is not an email address ({why})") from None
    normal: str = checked.normalized
    return normal.lower()


def address_hash(key: bytes, address: str) -> str:
    """A keyed hash (HMAC-SHA256) of a normalised address: stable for the database's life, and
    useless to anyone without the key."""
    return hmac.digest(key, address.encode("utf-8"), "sha256").hex()
