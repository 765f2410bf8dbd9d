"""The consent ledger: append-only entries, each chained to the one before by HMAC-SHA256 under
the ledger key (derived from the secret key, never in the database; see ledger_key.py).

An entry's hash covers its id, the keyed hash of the address, purpose, action, source, both
times, the digest of its evidence, and the previous entry's hash. The evidence itself (IP, user
agent, consent text ...) is personal data and lives in `consent_evidence`, outside the chain: it
can be erased and the chain still verifies.

The ledger head (last id, last hash, first keyed entry) is sealed by a MAC under the same key, so
deleting the newest entries and moving the head back needs the key too. Entries written before
the ledger was keyed (databases made before schema 0013) keep their plain SHA-256 hashes: the
first keyed entry, or the sealed head, pins them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, select, update

from mailer.consent.ledger_key import key_of
from mailer.consent.state import Action, Source
from mailer.store.bulk import execute_many
from mailer.store.tables import consent_entries, consent_evidence, ledger_head

GENESIS_HASH = "0" * 64
# Per statement: Connection.execution_options would stream every later statement too.
STREAM = {"yield_per": 5000}


@dataclass(frozen=True)
class NewEntry:
    """What is to be appended; the ledger adds the id, the record time and the hashes."""

    subject_hash: str
    contact_id: int | None
    purpose: str
    action: Action
    source: Source
    occurred_at: datetime
    evidence: str | None = None  # canonical JSON (canonical_evidence), personal data


def canonical_evidence(evidence: dict[str, Any]) -> str:
    """The one JSON text of `evidence` that is stored and hashed: sorted keys, no spaces."""
    return json.dumps(evidence, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def evidence_digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _timestamp(moment: datetime) -> str:
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds")


_json_string = lru_cache(maxsize=4096)(json.dumps)


CHAINED = ("id", "subject_hash", "purpose", "action", "source", "occurred_at", "recorded_at",
           "evidence_digest", "prev_hash")  # fmt: skip


def entry_hash(row: Mapping[str, Any] | Any, key: bytes | None = None) -> str:
    """The hash an entry must carry, from a mapping or a result row (see chain_hash)."""
    mapping = row if isinstance(row, Mapping) else row._mapping
    return chain_hash(*(mapping[name] for name in CHAINED), key=key)


def chain_hash(
    entry_id: int, subject_hash: str, purpose: str, action: str, source: str,
    occurred_at: datetime, recorded_at: datetime, digest: str | None, prev_hash: str,
    *, key: bytes | None = None,
) -> str:  # fmt: skip
    """HMAC-SHA256 under `key` (plain SHA-256 without one: entries from before the ledger was
    keyed) of the compact JSON array [id, subject_hash, purpose, action, source,
    occurred_at, recorded_at, evidence_digest, prev_hash], times in ISO 8601 UTC with
    microseconds.

    Built by hand, as json.dumps of the list would (a test holds the two equal), because it
    runs once per imported row: apart from the purpose, every field is an integer, a hex
    digest, an ISO time or a fixed word, none of which JSON escapes.
    """
    text = (
        f'[{int(entry_id)},"{subject_hash}",{_json_string(purpose)},"{action}","{source}",'
        f'"{_timestamp(occurred_at)}","{_timestamp(recorded_at)}",'
        + (f'"{digest}"' if digest else "null")
        + f',"{prev_hash}"]'
    )
    if key is None:
        return hashlib.sha256(text.encode()).hexdigest()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def append(connection: Connection, entries: Sequence[NewEntry], recorded_at: datetime) -> list[int]:
    """Append `entries` in order and return their ids. Call inside a transaction: the lock on
    the ledger head serialises appenders (FOR UPDATE on PostgreSQL, the write lock on SQLite)."""
    if not entries:
        return []
    ledger_key = key_of(connection)
    key = ledger_key.chain
    head = connection.execute(
        select(ledger_head.c.last_id, ledger_head.c.last_hash, ledger_head.c.keyed_from)
        .where(ledger_head.c.id == 1)
        .with_for_update()
    ).one()
    last_id, last_hash = head.last_id, head.last_hash
    first_id = last_id + 1
    # A ledger from before the key is keyed from here on (`mailer init` does it earlier).
    keyed_from = head.keyed_from if head.keyed_from is not None else first_id
    rows, evidence_rows = [], []
    for entry in entries:
        last_id += 1
        digest = evidence_digest(entry.evidence) if entry.evidence else None
        fields = (last_id, entry.subject_hash, entry.purpose, entry.action, entry.source,
                  entry.occurred_at, recorded_at, digest, last_hash)  # fmt: skip
        last_hash = chain_hash(*fields, key=key)
        rows.append((*fields, last_hash, entry.contact_id))
        if entry.evidence:
            evidence_rows.append((last_id, entry.evidence))
    execute_many(connection, consent_entries.insert(), rows,
                 columns=(*CHAINED, "entry_hash", "contact_id"))  # fmt: skip
    execute_many(connection, consent_evidence.insert(), evidence_rows,
                 columns=("entry_id", "data"))  # fmt: skip
    connection.execute(
        update(ledger_head)
        .where(ledger_head.c.id == 1)
        .values(last_id=last_id, last_hash=last_hash, keyed_from=keyed_from,
                head_mac=ledger_key.head_mac(last_id, last_hash, keyed_from))
    )  # fmt: skip
    return list(range(first_id, last_id + 1))


@dataclass(frozen=True)
class Verification:
    entries: int
    head_hash: str
    problem: str | None = None  # the first break found, naming the entry
    keyed_from: int | None = None  # the first entry chained under the ledger key

    @property
    def intact(self) -> bool:
        return self.problem is None


def verify(connection: Connection) -> Verification:
    """Recompute the whole chain, streaming, under the ledger key; report the first entry that
    was altered, inserted or deleted, evidence that was changed or removed without an erasure,
    and a ledger head that was moved back or unsealed."""
    ledger_key = key_of(connection)
    head = connection.execute(select(ledger_head).where(ledger_head.c.id == 1)).one()
    if head.keyed_from is None:
        problem = ("the ledger was never sealed under the ledger key (a database from before "
                   "schema 0013): run `mailer init` once")  # fmt: skip
        return Verification(0, GENESIS_HASH, problem)
    result = _verify_chain(connection, ledger_key.chain, head)
    if result.problem is None and not (head.head_mac is None and result.entries == 0):
        sealed = ledger_key.head_mac(head.last_id, head.last_hash, head.keyed_from)
        if head.head_mac is None or not hmac.compare_digest(sealed, head.head_mac):
            problem = (f"the ledger head (entry {head.last_id}) does not carry the seal of the "
                       "ledger key: it was moved, or the newest entries were deleted and the "
                       "head set back")  # fmt: skip
            return Verification(result.entries, result.head_hash, problem, head.keyed_from)
    return result


def seal(connection: Connection) -> Verification:
    """Key a ledger from before schema 0013: its entries keep their SHA-256 hashes, later ones
    are keyed, and the head is sealed. Checks the unkeyed chain first and refuses to seal a
    broken one (sealing would vouch for it). A ledger already sealed is only verified."""
    head = connection.execute(
        select(ledger_head).where(ledger_head.c.id == 1).with_for_update()
    ).one()
    if head.keyed_from is not None:
        return verify(connection)
    ledger_key = key_of(connection)
    keyed_from = head.last_id + 1
    result = _verify_chain(connection, ledger_key.chain, head, keyed_from)
    if result.problem is None:
        mac = ledger_key.head_mac(head.last_id, head.last_hash, keyed_from)
        connection.execute(update(ledger_head).where(ledger_head.c.id == 1)
                           .values(keyed_from=keyed_from, head_mac=mac))  # fmt: skip
    return result


def _verify_chain(
    connection: Connection, key: bytes, head: Any, keyed_from: int | None = None
) -> Verification:
    """The chain from entry 1 to the head: entries from `keyed_from` on are keyed."""
    keyed_from = keyed_from or head.keyed_from
    erased = set(
        connection.scalars(
            select(consent_entries.c.subject_hash).where(consent_entries.c.action == "erased")
        )
    )
    expected_id, previous_hash, count = 1, GENESIS_HASH, 0
    for row in _entries_with_evidence(connection):
        keyed = key if row.id >= keyed_from else None
        problem = _check(row, expected_id, previous_hash, erased, keyed)
        if problem:
            return Verification(count, previous_hash, problem, keyed_from)
        expected_id, previous_hash, count = row.id + 1, row.entry_hash, count + 1
    problem = None
    if head.last_id > count:
        problem = (f"entries {count + 1}..{head.last_id} were deleted: the ledger head records "
                   f"{head.last_id} entries but only {count} remain")  # fmt: skip
    elif head.last_id != count or head.last_hash != previous_hash:
        problem = f"entry {head.last_id + 1} was inserted after the ledger head, outside mailer"
    return Verification(count, previous_hash, problem, keyed_from)


def _entries_with_evidence(connection: Connection) -> Iterator[Any]:
    query = (
        select(consent_entries, consent_evidence.c.data)
        .outerjoin(consent_evidence, consent_evidence.c.entry_id == consent_entries.c.id)
        .order_by(consent_entries.c.id)
    )
    yield from connection.execute(query, execution_options=STREAM)


def _check(
    row: Any, expected_id: int, previous_hash: str, erased: set[str], key: bytes | None
) -> str | None:
    if row.id != expected_id:
        return (
            f"entry {expected_id} was deleted: the ledger jumps from entry {expected_id - 1} "
            f"to entry {row.id}"
        )
    if row.prev_hash != previous_hash:
        return (
            f"entry {row.id} does not follow entry {row.id - 1}: one of them was inserted "
            "or rewritten"
        )
    if not hmac.compare_digest(entry_hash(row, key), row.entry_hash):
        return f"entry {row.id} was altered: its contents no longer match its hash"
    if row.data is not None and evidence_digest(row.data) != row.evidence_digest:
        return f"the evidence of entry {row.id} was altered"
    if row.data is None and row.evidence_digest and row.subject_hash not in erased:
        return f"the evidence of entry {row.id} was deleted, but its subject was never erased"
    return None
