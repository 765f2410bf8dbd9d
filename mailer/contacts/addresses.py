"""Email addresses: validation with email-validator, one normal form, and the keyed hash that
identifies an address after its owner has been erased."""

from __future__ import annotations

import hmac

from email_validator import EmailNotValidError, validate_email


class InvalidAddress(ValueError):
    """The text is not an email address; the message says why."""


def normalise_address(text: str) -> str:
    """The address in the form mailer stores and compares: trimmed, lowercased (every mailbox
    provider we deliver to treats local parts case-insensitively), IDN domain in Unicode
    (`xn--bcher-kva.de` and `bücher.de` are the same address). Raise InvalidAddress otherwise."""
    candidate = text.strip()
    if not candidate:
        raise InvalidAddress("the address is empty")
    try:
        checked = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidAddress(f"'{candidate}' is not an email address ({error})") from None
    normal: str = checked.normalized
    return normal.lower()


def address_hash(key: bytes, address: str) -> str:
    """A keyed hash (HMAC-SHA256) of a normalised address: stable for the database's life, and
    useless to anyone without the key."""
    return hmac.digest(key, address.encode("utf-8"), "sha256").hex()
