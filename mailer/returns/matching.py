"""Which of our messages a returned message is about: the outbox row, or None.

By the strongest evidence first: the signed VERP token of our envelope sender (only we can
make one), then our Message-ID, then the failed address with the most recent message we sent
it. A token that is present but does not verify matches nothing at all: someone altered or
forged our address, and a weaker key must not let that report through.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from mailer.contacts.addresses import InvalidAddress, normalise_address
from mailer.delivery.claims import token_outbox_id
from mailer.returns.report import Returned
from mailer.store.tables import contacts, outbox
from mailer.tokens import TokenKeys

# A bounce arrives within minutes; a delay warning's final failure after up to 5 days of
# retries; feedback loops report within days. Beyond this, "the last message to that address"
# is a guess.
RECIPIENT_WINDOW = timedelta(days=14)


def match(
    connection: Connection, keys: TokenKeys, returned: Returned, now: datetime | None = None
) -> int | None:
    """The outbox id `returned` is about. `now` bounds the recipient fallback to messages sent
    within RECIPIENT_WINDOW before it (without `now`, the most recent message at all)."""
    if returned.verp_token is not None:
        return _by_token(connection, keys, returned.verp_token)
    if returned.original_message_id:
        found = connection.scalar(
            select(outbox.c.id).where(outbox.c.message_id == f"<{returned.original_message_id}>")
        )
        if found is not None:
            return int(found)
    if returned.recipient:
        return _by_recipient(connection, returned.recipient, now)
    return None


def _by_token(connection: Connection, keys: TokenKeys, token: str) -> int | None:
    message = token_outbox_id(keys, "bounce", token)
    if message is None:
        return None
    found = connection.scalar(select(outbox.c.id).where(outbox.c.id == message))
    return int(found) if found is not None else None


def _by_recipient(connection: Connection, address: str, now: datetime | None) -> int | None:
    try:
        address = normalise_address(address)  # as contacts are stored
    except InvalidAddress:
        return None
    query = (
        select(outbox.c.id)
        .join(contacts, contacts.c.id == outbox.c.contact_id)
        .where(contacts.c.email == address, outbox.c.sent_at.is_not(None))
        .order_by(outbox.c.sent_at.desc(), outbox.c.id.desc())
        .limit(1)
    )
    if now is not None:
        query = query.where(outbox.c.sent_at > now - RECIPIENT_WINDOW, outbox.c.sent_at <= now)
    found = connection.scalar(query)
    return int(found) if found is not None else None
