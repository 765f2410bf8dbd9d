"""The outbox as delivery's work queue: claim rows with a lease, write down what became of each.

A claimed row is `sending`, owned by one worker, and its `send_after` is the end of the lease:
once that passes, any worker may claim it again (its first worker crashed or hung). PostgreSQL
workers claim with FOR UPDATE SKIP LOCKED, so two never take the same row; on SQLite the claim
runs under the database's single write lock (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import Connection, Dialect, bindparam, case, select, true, update

from mailer.delivery.pauses import paused_campaigns
from mailer.store.bulk import Many, one_of
from mailer.store.one_trip import write_in_one_trip
from mailer.store.tables import outbox
from mailer.tokens import TokenError, TokenKeys, verify

# In this order: rows whose worker vanished first (they are the oldest work), then retries
# that are due, then new messages.
CLAIMABLE = ("sending", "deferred", "queued")

Ending = Literal["sent", "deferred", "failed", "skipped", "released"]


@dataclass(frozen=True)
class OutboxMessage:
    """A claimed outbox row: one message to one contact."""

    id: int
    campaign: str
    step: str
    contact_id: int
    variant: str | None
    attempts: int  # this attempt included
    queued_at: datetime
    reclaimed: bool  # a worker held it before and its lease ran out: it may have sent it

    @property
    def message_key(self) -> str:
        return message_key(self.id)


def message_key(outbox_id: int) -> str:
    """The key tokens and the Message-ID are made from: the same for every attempt."""
    return f"m{outbox_id}"


def outbox_id(key: str) -> int | None:
    """The outbox row a message key names, or None for anything else."""
    return int(key[1:]) if key.startswith("m") and key[1:].isdigit() else None


def token_outbox_id(keys: TokenKeys, purpose: str, token: str) -> int | None:
    """The outbox row a genuine one-key token for `purpose` names; None for a forged,
    malformed or foreign token (confirmations carry a token of another key)."""
    try:
        [key] = verify(keys, purpose, token)
    except (TokenError, ValueError):  # ValueError: not exactly one field
        return None
    return outbox_id(key)


@dataclass(frozen=True)
class Result:
    """What became of one claimed message."""

    outbox_id: int
    ending: Ending
    reason: str | None = None
    reply: str | None = None
    relay: str | None = None  # the relay that gave `reply`, by name
    send_after: datetime | None = None  # deferred or released: when to try again
    message_id: str | None = None
    links: Sequence[str] = ()
    consent_entry_id: int | None = None
    bounced_address: str | None = None  # a hard bounce: suppress this address


def claim(connection: Connection, owner: str, now: datetime, lease: timedelta,
          limit: int) -> list[OutboxMessage]:  # fmt: skip
    """Take up to `limit` due rows for `owner` until `now + lease`."""
    paused = list(paused_campaigns(connection))
    taken: list[Any] = []
    for status in CLAIMABLE:  # one index range (status, send_after) each
        if len(taken) >= limit:
            break
        query = (
            select(outbox.c.id, outbox.c.status)
            .where(outbox.c.status == status, outbox.c.send_after <= now)
            .order_by(outbox.c.send_after)
            .limit(limit - len(taken))
        )
        if paused:
            query = query.where(outbox.c.campaign.not_in(paused))
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        taken += connection.execute(query).all()
    if not taken:
        return []
    ids = [row.id for row in taken]
    connection.execute(
        update(outbox).where(one_of(connection, outbox.c.id, ids))
        .values(status="sending", lease_owner=owner, send_after=now + lease,
                attempts=outbox.c.attempts + 1)
    )  # fmt: skip
    reclaimed = {row.id for row in taken if row.status == "sending"}
    rows = connection.execute(
        select(outbox.c.id, outbox.c.campaign, outbox.c.step, outbox.c.contact_id,
               outbox.c.variant, outbox.c.attempts, outbox.c.queued_at)
        .where(one_of(connection, outbox.c.id, ids)).order_by(outbox.c.id)
    )  # fmt: skip
    return [OutboxMessage(row.id, row.campaign, row.step, row.contact_id, row.variant,
                          row.attempts, row.queued_at, row.id in reclaimed)
            for row in rows]  # fmt: skip


def take_back(connection: Connection, owner: str, now: datetime) -> int:
    """Make `owner`'s rows still `sending` due at once, for its next claim: an earlier run of
    the same worker stopped without writing their results (the database went away). Only
    between runs: during one, its rows in flight are `sending` too."""
    taken = (
        update(outbox).where(outbox.c.status == "sending", outbox.c.lease_owner == owner)
        .values(send_after=now)
    )  # fmt: skip
    return connection.execute(taken).rowcount or 0


def finish(connection: Connection, owner: str, results: Iterable[Result], now: datetime) -> int:
    """Write the results of `owner`'s claimed rows; return how many rows it still held (a row
    whose lease ran out and that another worker took is not overwritten)."""
    return sum(
        statement.execute(connection, values)
        for statement, values in finishing(connection.dialect, owner, results, now)
    )


def finish_in_one_trip(connection: Connection, owner: str, results: Iterable[Result],
                       now: datetime) -> int:  # fmt: skip
    """`finish` in a transaction of its own, sent to PostgreSQL in one round trip."""
    return write_in_one_trip(connection, finishing(connection.dialect, owner, results, now))


def finishing(dialect: Dialect, owner: str, results: Iterable[Result],
              now: datetime) -> list[tuple[Many, list[dict[str, Any]]]]:  # fmt: skip
    """The statements that write `results`, each with its rows of values."""
    work = []
    for ending, group in _grouped(results).items():
        values = [_values(result, now) | {"owner": owner} for result in group]
        work.append((_finishing(dialect, ending, tuple(values[0])), values))
    return work


@lru_cache(maxsize=64)  # a dialect per engine: a few at a time
def _finishing(dialect: Dialect, ending: Ending, keys: tuple[str, ...]) -> Many:
    """The UPDATE that writes results of one ending, one row each, compiled once: building it
    anew cost the writer a fifth of its CPU, about 30 µs a message, and SQLAlchemy's own
    executemany about 25 µs a message more than store.bulk.Many."""
    changes: dict[str, Any] = {key: bindparam(key) for key in keys
                               if key not in ("row_id", "owner")}  # fmt: skip
    if ending == "released":  # never attempted: give back the attempt counted at claim
        changes |= {"attempts": outbox.c.attempts - 1,
                    "status": case((outbox.c.attempts <= 1, "queued"),
                                   else_="deferred")}  # fmt: skip
    # IS TRUE: a test the (status, send_after) index cannot take, so each row is found by its
    # id. Statistics read before the claim count no row `sending`, and PostgreSQL then read
    # every claimed row to find this one (~100 µs of server CPU a message with 1,200 claimed).
    statement = (
        update(outbox)
        .where(outbox.c.id == bindparam("row_id"), outbox.c.lease_owner == bindparam("owner"),
               (outbox.c.status == "sending").is_(true()))
        .values(changes)
    )  # fmt: skip
    return Many(dialect, statement, keys)


def _grouped(results: Iterable[Result]) -> dict[Ending, list[Result]]:
    groups: dict[Ending, list[Result]] = {}
    for result in results:
        groups.setdefault(result.ending, []).append(result)
    return groups


def _values(result: Result, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"row_id": result.outbox_id, "lease_owner": None,
                              "reason": result.reason}  # fmt: skip
    if result.ending == "released":
        return values | {"send_after": result.send_after or now}
    again = result.send_after if result.ending == "deferred" else None
    values |= {"status": result.ending, "reply": result.reply, "relay": result.relay,
               "send_after": again}  # fmt: skip
    if result.ending == "sent":
        values |= {"sent_at": now, "message_id": result.message_id,
                   "links": json.dumps(list(result.links)),
                   "consent_entry_id": result.consent_entry_id}  # fmt: skip
    return values
