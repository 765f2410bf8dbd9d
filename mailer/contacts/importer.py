"""`mailer import`: stream a CSV into contacts, list memberships, tags and consent evidence.

The file is read in batches; each batch is one transaction, so an interrupted import keeps what
it committed and a re-run updates instead of duplicating. Bad rows go to a rejects file with their
line and reason; suppressed addresses are never re-subscribed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, text, update

from mailer.clock import Clock
from mailer.consent.ledger import NewEntry
from mailer.consent.records import current_statuses, record
from mailer.consent.state import import_actions
from mailer.consent.suppressions import suppressed
from mailer.contacts.batches import BatchParser, ContactRecord, parsed_batches
from mailer.contacts.csvfile import CsvReader, RejectsWriter
from mailer.contacts.rows import map_columns
from mailer.store.bulk import execute_many, one_of
from mailer.store.statistics import ANALYZE_FROM_ROWS, analyze
from mailer.store.tables import contact_tags, contacts, lists, memberships
from mailer.store.upsert import upsert


@dataclass(frozen=True)
class ImportOptions:
    list_name: str
    double_opt_in: Mapping[str, bool]  # every list's flag: consent status needs it
    columns: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    attribute_types: Mapping[str, str] = field(default_factory=dict)
    delimiter: str | None = None
    rejects_path: Path | None = None  # default: <file>.rejects.csv beside the file
    # Called in each batch's transaction with its contacts: the CLI moves their lifecycle stage
    # there, so an imported customer is a customer at once, not at their next event.
    after_batch: Callable[[Connection, list[int]], None] | None = None


@dataclass
class ImportSummary:
    imported: int = 0  # new contacts
    updated: int = 0  # rows for contacts already known (in the database or earlier in the file)
    rejected: int = 0
    warnings: int = 0  # cells left out or cut short; the contact imported
    suppressed: int = 0  # suppressed addresses: skipped, never re-subscribed
    consent_recorded: int = 0  # ledger entries appended
    rejects_file: str | None = None
    analyzed: bool = False  # PostgreSQL's statistics of the tables written were refreshed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# From this size on, a second process parses while this one writes (contacts/batches.py).
BACKGROUND_FROM_BYTES = 1024 * 1024
# After ANALYZE_FROM_ROWS rows, or a tenth of the contacts there were, the import ends with
# ANALYZE on PostgreSQL: with the statistics of the list as it was, the consent check at send
# time scans the whole list per chunk.
ANALYZE_FROM_SHARE = 0.1
ANALYZED = ("contacts", "memberships", "contact_tags", "consent_entries", "consent_evidence",
            "consent_status")  # fmt: skip

Progress = Callable[[int, int], None]  # (bytes read, file size)
RejectHook = Callable[[int, str], None]  # (line, reason)
WarningHook = Callable[[int, str], None]  # (line, "column 'X': what was done")


def rejects_path_for(path: Path) -> Path:
    return path.with_name(path.stem + ".rejects.csv")


def import_contacts(
    engine: Engine,
    path: Path,
    options: ImportOptions,
    key: bytes,
    clock: Clock,
    progress: Progress | None = None,
    on_reject: RejectHook | None = None,
    on_warning: WarningHook | None = None,
) -> ImportSummary:
    """Import `path` into `options.list_name`; raise InputFileError when it cannot be read."""
    summary = ImportSummary()
    with CsvReader(path, options.delimiter) as reader:
        targets = map_columns(reader.header, options.columns, str(path))
        rejects = RejectsWriter(options.rejects_path or rejects_path_for(path), reader.header)
        with engine.connect() as connection:
            list_id = connection.scalar(select(lists.c.id).where(lists.c.name == options.list_name))
            before = _estimated_contacts(connection)
        if list_id is None:
            raise ValueError(f"list '{options.list_name}' is not in the database; sync lists first")
        parser = BatchParser(targets, options.attribute_types, frozenset(options.tags),
                             clock.now(), key, path.name, tuple(reader.header))  # fmt: skip
        try:
            background = reader.size >= BACKGROUND_FROM_BYTES
            for batch in parsed_batches(reader, parser, background):
                for row, reason in batch.rejects:
                    rejects.write(row.line, reason, row.fields)
                    if on_reject:
                        on_reject(row.line, reason)
                summary.warnings += len(batch.warnings)
                for line, warning in batch.warnings:
                    if on_warning:
                        on_warning(line, warning)
                summary.updated += batch.merged
                if batch.records:
                    with engine.begin() as connection:
                        _store_batch(connection, batch.records, list_id, path, options, clock,
                                     summary)  # fmt: skip
                if progress:
                    progress(batch.bytes_read, reader.size)
        finally:
            rejects.close()
        summary.rejected = rejects.count
        summary.rejects_file = str(rejects.path) if rejects.count else None
    written = summary.imported + summary.updated
    if before is not None and written >= min(ANALYZE_FROM_ROWS, before * ANALYZE_FROM_SHARE):
        analyze(engine, ANALYZED, written, "the import")
        summary.analyzed = True
    return summary


def _estimated_contacts(connection: Connection) -> float | None:
    """The planner's estimate of the contacts there are (0 before the first ANALYZE); None on
    SQLite, whose planner goes by the indexes' shape without statistics."""
    if connection.dialect.name != "postgresql":
        return None
    estimate = connection.scalar(text("SELECT reltuples FROM pg_class "
                                      "WHERE oid = to_regclass('contacts')"))  # fmt: skip
    return max(float(estimate or 0), 0.0)


def _store_batch(
    connection: Connection,
    batch: list[ContactRecord],
    list_id: int,
    path: Path,
    options: ImportOptions,
    clock: Clock,
    summary: ImportSummary,
) -> None:
    now = clock.now()
    blocked = suppressed(connection, (record.subject_hash for record in batch))
    kept = [record for record in batch if record.subject_hash not in blocked]
    summary.suppressed += len(batch) - len(kept)
    ids, fresh = _save_contacts(connection, kept, now, summary)
    source = f"import:{path.name}"
    upsert(
        connection,
        memberships,
        [(list_id, ids[r.email], now, source) for r in kept],
        keys=("list_id", "contact_id"),
        columns=("list_id", "contact_id", "joined_at", "source"),
    )
    upsert(
        connection,
        contact_tags,
        [(ids[r.email], tag) for r in kept for tag in r.tags],
        keys=("contact_id", "tag"),
        columns=("contact_id", "tag"),
    )
    entries = _consent_entries(connection, kept, ids, fresh, options.list_name)
    record(connection, entries, options.double_opt_in, now)
    summary.consent_recorded += len(entries)
    if options.after_batch:
        options.after_batch(connection, [ids[r.email] for r in kept])


def _save_contacts(
    connection: Connection, batch: list[ContactRecord], now: datetime, summary: ImportSummary
) -> tuple[dict[str, int], set[int]]:
    """Insert new contacts and update known ones; return address -> contact id, and the ids
    of the new ones."""
    emails = [record.email for record in batch]
    known = {
        row.email: row
        for row in connection.execute(
            select(
                contacts.c.id, contacts.c.email, contacts.c.first_name, contacts.c.last_name,
                contacts.c.timezone, contacts.c.locale, contacts.c.attributes,
            ).where(one_of(connection, contacts.c.email, emails))
        )
    }  # fmt: skip
    fresh = [record for record in batch if record.email not in known]
    ids = {email: row.id for email, row in known.items()}
    if fresh:
        ids.update(_insert_contacts(connection, fresh, now))
    changed = [record for record in batch if record.email in known]
    execute_many(
        connection,
        update(contacts)
        .where(contacts.c.id == bindparam("contact_id"))
        .values(
            first_name=bindparam("first_name"), last_name=bindparam("last_name"),
            timezone=bindparam("timezone"), locale=bindparam("locale"),
            attributes=bindparam("attributes"), updated_at=bindparam("updated_at"),
        ),
        [_update_values(record, known[record.email], now) for record in changed],
    )  # fmt: skip
    summary.imported += len(fresh)
    summary.updated += len(changed)
    return ids, {ids[record.email] for record in fresh}


def _insert_contacts(
    connection: Connection, fresh: list[ContactRecord], now: datetime
) -> Iterable[tuple[str, int]]:
    """Insert new contacts; return (address, id) pairs."""
    columns = ("email", "first_name", "last_name", "timezone", "locale", "attributes",
               "created_at", "updated_at")  # fmt: skip
    if connection.dialect.name == "sqlite":
        # This transaction holds SQLite's write lock (BEGIN IMMEDIATE): the ids after the
        # largest are ours to give, which saves reading them back.
        start = (connection.scalar(select(func.max(contacts.c.id))) or 0) + 1
        numbered = [(start + index, r.email, r.first_name, r.last_name, r.timezone, r.locale,
                     r.attributes, now, now) for index, r in enumerate(fresh)]  # fmt: skip
        execute_many(connection, contacts.insert(), numbered, ready=("attributes",),
                     columns=("id", *columns))  # fmt: skip
        return ((r.email, start + index) for index, r in enumerate(fresh))
    values = [(r.email, r.first_name, r.last_name, r.timezone, r.locale, r.attributes, now, now)
              for r in fresh]  # fmt: skip
    execute_many(connection, contacts.insert(), values, ready=("attributes",), columns=columns)
    inserted = connection.execute(
        select(contacts.c.email, contacts.c.id).where(
            one_of(connection, contacts.c.email, (record.email for record in fresh))
        )
    )
    return ((row.email, row.id) for row in inserted)


def _update_values(record: ContactRecord, known: Any, now: datetime) -> dict[str, Any]:
    # Empty cells never erase: keep the stored value where the file has none.
    values: dict[str, Any] = {"contact_id": known.id, "updated_at": now}
    for name in ("first_name", "last_name", "timezone", "locale"):
        given = getattr(record, name)
        values[name] = given if given is not None else getattr(known, name)
    values["attributes"] = dict(known.attributes or {}) | json.loads(record.attributes)
    return values


def _consent_entries(
    connection: Connection,
    kept: list[ContactRecord],
    ids: dict[str, int],
    fresh: set[int],
    list_name: str,
) -> list[NewEntry]:
    """Grants (and confirmations) for rows that carry evidence, where an import may grant."""
    with_evidence = [record for record in kept if record.consent_at is not None]
    statuses = current_statuses(  # a contact created by this batch has none yet
        connection, list_name, {ids[r.email] for r in with_evidence} - fresh
    )
    entries = []
    for r in with_evidence:
        contact_id = ids[r.email]
        for action in import_actions(statuses.get(contact_id, "none"), r.confirmed_at is not None):
            if action == "granted":
                assert r.consent_at is not None
                entries.append(NewEntry(r.subject_hash, contact_id, list_name, action, "import",
                                        r.consent_at, r.grant_evidence))  # fmt: skip
            else:
                assert r.confirmed_at is not None
                entries.append(NewEntry(r.subject_hash, contact_id, list_name, action, "import",
                                        r.confirmed_at, r.confirm_evidence))  # fmt: skip
    return entries
