"""Hard bounces at the relay: a recipient refused at RCPT with a permanent "no such user"
(5.1.1, delivery/verdicts.py). Delivery suppresses the address at once (delivery/writer.py);
here each is also recorded once as a returned message of classification `refused`, so the
hard bounce rates (returns/rates.py, the circuit breakers) count it as they count a DSN that
comes back later, with the refused message among those sent: a list of dead addresses sent
straight to the receivers' servers is stopped as one sent through a relay that bounces later."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from mailer.config import Settings
from mailer.contacts.addresses import InvalidAddress, address_hash, normalise_address
from mailer.returns.breakers import REFUSED, check_breakers
from mailer.store.tables import outbox, returned_messages


def recipient_hash(key: bytes, address: str) -> str:
    """The suppressions' keyed hash of the address (as typed, when it does not normalise)."""
    try:
        return address_hash(key, normalise_address(address))
    except InvalidAddress:
        return address_hash(key, address)


def record_refusals(connection: Connection, settings: Settings, key: bytes,
                    refused: Sequence[tuple[int, str, str | None, str]],
                    now: datetime) -> None:  # fmt: skip
    """Each (outbox id, address, the relay's reply, what was done) once, whoever writes it (a
    row taken over after a lost lease is refused once), then the breakers of its campaign."""
    if not refused:
        return
    ids = [outbox_id for outbox_id, *_ in refused]
    query = select(outbox.c.id, outbox.c.campaign).where(outbox.c.id.in_(ids))
    campaigns: dict[int, str] = {row.id: row.campaign for row in connection.execute(query)}
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    for outbox_id, address, reply, action in refused:
        connection.execute(dialect.insert(returned_messages).values(
            digest=hashlib.sha256(f"refused at the relay: {outbox_id}".encode()).hexdigest(),
            received_at=now, classification=REFUSED, recipient_hash=recipient_hash(key, address),
            status_code=_status_code(reply), outbox_id=outbox_id,
            campaign=campaigns.get(outbox_id), action=action,
        ).on_conflict_do_nothing(index_elements=["digest"]))  # fmt: skip
    for campaign in sorted(set(campaigns.values())):
        check_breakers(connection, settings, campaign, now)


def _status_code(reply: str | None) -> str | None:
    """The enhanced status code of `550 5.1.1 user unknown`, else the reply code."""
    words = (reply or "").split()
    if len(words) > 1 and words[1][:2] in ("5.", "4.") and words[1].count(".") == 2:
        return words[1][:16]
    return words[0][:16] if words else None
