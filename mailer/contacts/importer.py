"""`mailer import`: stream a CSV into contacts, list memberships, tags and consent evidence.

The file is read in batches; each batch is one transaction, so an interrupted import keeps what
it committed and a re-run updates instead of duplicating. Bad rows go to a rejects file with their
line and reason; suppressed addresses are never re-subscribed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from mailer.clock import Clock
from mailer.consent.ledger import NewEntry
from mailer.consent.records import current_statuses, record
from mailer.consent.state import import_actions
from mailer.consent.suppressions import suppressed
from mailer.contacts.batches import BatchParser, parsed_batches
from mailer.contacts.csvfile import CsvReader, RejectsWriter
from mailer.contacts.rows import ContactRow, map_columns
from mailer.store.bulk import execute_many, one_of
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


@dataclass
class ImportSummary:
    imported: int = 0  # new contacts
    updated: int = 0  # rows for contacts already known (in the database or earlier in the file)
    rejected: int = 0
    suppressed: int = 0  # suppressed addresses: skipped, never re-subscribed
    consent_recorded: int = 0  # ledger entries appended
    rejects_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Progress = Callable[[int, int], None]  # (bytes read, file size)
RejectHook = Callable[[int, str], None]  # (line, reason)


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
) -> ImportSummary:
    """Import `path` into `options.list_name`; raise InputFileError when it cannot be read."""
    summary = ImportSummary()
    with CsvReader(path, options.delimiter) as reader:
        targets = map_columns(reader.header, options.columns, str(path))
        rejects = RejectsWriter(options.rejects_path or rejects_path_for(path), reader.header)
        with engine.connect() as connection:
            list_id = connection.scalar(select(lists.c.id).where(lists.c.name == options.list_name))
        if list_id is None:
            raise ValueError(f"list '{options.list_name}' is not in the database; sync lists first")
        parser = BatchParser(targets, options.attribute_types, frozenset(options.tags),
                             clock.now(), key)  # fmt: skip
        try:
            for batch in parsed_batches(reader.rows(), parser):
                for row, reason in batch.rejects:
                    rejects.write(row.line, reason, row.fields)
                    if on_reject:
                        on_reject(row.line, reason)
                summary.updated += batch.merged
                if batch.contacts:
                    with engine.begin() as connection:
                        _store_batch(connection, batch.contacts, list_id, path, options, clock,
                                     summary)  # fmt: skip
                if progress:
                    progress(reader.bytes_read(), reader.size)
        finally:
            rejects.close()
        summary.rejected = rejects.count
        summary.rejects_file = str(rejects.path) if rejects.count else None
    return summary


def _store_batch(
    connection: Connection,
    batch: list[tuple[int, ContactRow, str]],
    list_id: int,
    path: Path,
    options: ImportOptions,
    clock: Clock,
    summary: ImportSummary,
) -> None:
    now = clock.now()
    hashes = {contact.email: subject_hash for _, contact, subject_hash in batch}
    blocked = suppressed(connection, hashes.values())
    kept = [(line, contact) for line, contact, hashed in batch if hashed not in blocked]
    summary.suppressed += len(batch) - len(kept)
    ids = _save_contacts(connection, [contact for _, contact in kept], now, summary)
    source = f"import:{path.name}"
    upsert(
        connection,
        memberships,
        [{"list_id": list_id, "contact_id": ids[c.email], "joined_at": now, "source": source}
         for _, c in kept],
        keys=("list_id", "contact_id"),
    )  # fmt: skip
    upsert(
        connection,
        contact_tags,
        [{"contact_id": ids[c.email], "tag": tag} for _, c in kept for tag in sorted(c.tags)],
        keys=("contact_id", "tag"),
    )
    entries = _consent_entries(connection, kept, ids, hashes, path, options)
    record(connection, entries, options.double_opt_in, now)
    summary.consent_recorded += len(entries)


def _save_contacts(
    connection: Connection, batch: list[ContactRow], now: datetime, summary: ImportSummary
) -> dict[str, int]:
    """Insert new contacts and update known ones; return address -> contact id."""
    known = {
        row.email: row
        for row in connection.execute(
            select(
                contacts.c.id,
                contacts.c.email,
                contacts.c.first_name,
                contacts.c.last_name,
                contacts.c.timezone,
                contacts.c.locale,
                contacts.c.attributes,
            ).where(one_of(connection, contacts.c.email, (contact.email for contact in batch)))
        )
    }
    fresh = [contact for contact in batch if contact.email not in known]
    ids = {email: row.id for email, row in known.items()}
    if fresh:
        execute_many(
            connection,
            contacts.insert(),
            [_contact_values(contact, {}) | {"created_at": now, "updated_at": now}
             for contact in fresh],
        )  # fmt: skip
        inserted = connection.execute(
            select(contacts.c.email, contacts.c.id).where(
                one_of(connection, contacts.c.email, (contact.email for contact in fresh))
            )
        )
        ids.update((row.email, row.id) for row in inserted)
    changed = [contact for contact in batch if contact.email in known]
    execute_many(
        connection,
        update(contacts)
        .where(contacts.c.id == bindparam("contact_id"))
        .values(
            first_name=bindparam("first_name"), last_name=bindparam("last_name"),
            timezone=bindparam("timezone"), locale=bindparam("locale"),
            attributes=bindparam("attributes"), updated_at=bindparam("updated_at"),
        ),
        [_update_values(contact, known[contact.email], now) for contact in changed],
    )  # fmt: skip
    summary.imported += len(fresh)
    summary.updated += len(changed)
    return ids


def _contact_values(contact: ContactRow, attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        "email": contact.email,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "timezone": contact.timezone,
        "locale": contact.locale,
        "attributes": attributes | contact.attributes,
    }


def _update_values(contact: ContactRow, known: Any, now: datetime) -> dict[str, Any]:
    # Empty cells never erase: keep the stored value where the file has none.
    values = _contact_values(contact, dict(known.attributes or {}))
    for name in ("first_name", "last_name", "timezone", "locale"):
        values[name] = values[name] if values[name] is not None else getattr(known, name)
    del values["email"]
    return values | {"contact_id": known.id, "updated_at": now}


def _consent_entries(
    connection: Connection,
    kept: list[tuple[int, ContactRow]],
    ids: dict[str, int],
    hashes: dict[str, str],
    path: Path,
    options: ImportOptions,
) -> list[NewEntry]:
    """Grants (and confirmations) for rows that carry evidence, where an import may grant."""
    with_evidence = [(line, c) for line, c in kept if c.consent_at is not None]
    statuses = current_statuses(
        connection, options.list_name, (ids[c.email] for _, c in with_evidence)
    )
    entries = []
    for line, contact in with_evidence:
        contact_id, status = ids[contact.email], statuses.get(ids[contact.email], "none")
        provenance = {"file": path.name, "line": str(line)}
        for action in import_actions(status, contact.confirmed_at is not None):
            granted = action == "granted"
            moment = contact.consent_at if granted else contact.confirmed_at
            assert moment is not None
            evidence = contact.evidence | provenance if granted else provenance
            entries.append(NewEntry(hashes[contact.email], contact_id, options.list_name, action,
                                    "import", moment, evidence))  # fmt: skip
    return entries
