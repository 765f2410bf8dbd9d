"""Recording consent: append to the ledger and keep the current-status projection in step."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, select

from mailer.consent import ledger
from mailer.consent.ledger import NewEntry
from mailer.consent.state import Status, status_after
from mailer.store.bulk import one_of
from mailer.store.tables import consent_status, ledger_head
from mailer.store.upsert import upsert


def current_statuses(
    connection: Connection, purpose: str, contact_ids: Iterable[int]
) -> dict[int, Status]:
    """Status on `purpose` per contact id; contacts with no record are left out (= "none")."""
    rows = connection.execute(
        select(consent_status.c.contact_id, consent_status.c.status).where(
            consent_status.c.purpose == purpose,
            one_of(connection, consent_status.c.contact_id, contact_ids),
        )
    )
    return {row.contact_id: cast(Status, row.status) for row in rows}


def lock_ledger(connection: Connection) -> None:
    """Take the ledger's append lock before reading a status that decides an append: a second
    withdrawal at the same moment (another request, another server process) waits here, then
    reads the first one's entry and appends nothing. PostgreSQL: the ledger head's row lock;
    SQLite: the write lock BEGIN IMMEDIATE took already."""
    connection.execute(
        select(ledger_head.c.last_id).where(ledger_head.c.id == 1).with_for_update()
    )


def record(
    connection: Connection,
    entries: Sequence[NewEntry],
    double_opt_in: Mapping[str, bool],
    recorded_at: datetime,
) -> list[int]:
    """Append `entries` to the ledger and update each contact's status; return the entry ids."""
    ids = ledger.append(connection, entries, recorded_at)
    by_purpose: dict[str, set[int]] = defaultdict(set)
    for entry in entries:
        if entry.contact_id is not None and entry.purpose in double_opt_in:
            by_purpose[entry.purpose].add(entry.contact_id)
    current = {
        purpose: current_statuses(connection, purpose, contact_ids)
        for purpose, contact_ids in by_purpose.items()
    }
    changed: dict[tuple[int, str], tuple[object, ...]] = {}
    for entry_id, entry in zip(ids, entries, strict=True):
        if entry.contact_id is None or entry.purpose not in double_opt_in:
            continue
        before = current[entry.purpose].get(entry.contact_id, "none")
        after = status_after(before, entry.action, double_opt_in[entry.purpose])
        if after == before:
            continue  # the entry that decided the status stays the one on record
        current[entry.purpose][entry.contact_id] = after
        changed[(entry.contact_id, entry.purpose)] = (
            entry.contact_id, entry.purpose, after, entry.occurred_at, entry_id,
        )  # fmt: skip
    upsert(
        connection,
        consent_status,
        list(changed.values()),
        keys=("contact_id", "purpose"),
        update=("status", "since", "entry_id"),
        columns=("contact_id", "purpose", "status", "since", "entry_id"),
    )
    return ids
