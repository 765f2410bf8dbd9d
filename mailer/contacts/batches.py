"""The parsing half of an import: CSV rows in, batches of validated, merged contacts out.

Reading, validating, hashing and serialising is pure CPU work, so a big file is parsed by a
forked child process while this one writes the previous batch to the database: on two cores
the import takes about as long as the slower half rather than the sum of both. The child
reads the file itself and sends back finished records of plain values, cheap to unpickle.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from queue import Empty
from typing import Any, NamedTuple

from mailer.consent.ledger import canonical_evidence
from mailer.contacts.addresses import address_hash
from mailer.contacts.cells import shown
from mailer.contacts.csvfile import CsvReader, Row
from mailer.contacts.rows import ContactRow, RowError, parse_row

BATCH_ROWS = 50000
IN_FLIGHT = 2  # batches parsed ahead of the writer: enough to keep both cores busy


class ContactRecord(NamedTuple):
    """One contact of the file (rows for the same address merged), as the database half
    stores it."""

    line: int
    email: str
    subject_hash: str
    first_name: str | None
    last_name: str | None
    timezone: str | None
    locale: str | None
    attributes: str  # JSON
    tags: tuple[str, ...]
    consent_at: datetime | None
    confirmed_at: datetime | None
    grant_evidence: str | None  # canonical JSON for the ledger, with file and line
    confirm_evidence: str | None


@dataclass
class ParsedBatch:
    records: list[ContactRecord] = field(default_factory=list)
    rejects: list[tuple[Row, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (line, "column 'X': ...")
    merged: int = 0  # rows folded into an earlier row for the same address
    bytes_read: int = 0  # how far into the file this batch ends (for progress bars)

    # Records cross between processes as plain tuples: unpickling a NamedTuple calls its
    # Python-level constructor once per record, _make is tuple.__new__ in C.
    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"records": [tuple(record) for record in self.records]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, records=list(map(ContactRecord._make, state["records"])))


@dataclass(frozen=True)
class BatchParser:
    """Turns a chunk of CSV rows into a ParsedBatch."""

    targets: list[str]
    attribute_types: Mapping[str, str]
    tags: frozenset[str]
    now: datetime
    key: bytes
    file_name: str
    header: tuple[str, ...] = ()  # the columns as the file names them, for warnings

    def __call__(self, chunk: list[Row]) -> ParsedBatch:
        # A batch allocates hundreds of thousands of objects and frees none of them in cycles:
        # the cyclic garbage collector, run every 700 allocations, found nothing and cost
        # nearly half the parsing time. It is back on between batches.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._parsed(chunk)
        finally:
            if collecting:
                gc.enable()

    def _parsed(self, chunk: list[Row]) -> ParsedBatch:
        batch = ParsedBatch()
        # address -> (its first line, the merged contact, the line its consent evidence is from)
        by_address: dict[str, tuple[int, ContactRow, int]] = {}
        for row in chunk:
            try:
                if row.problem:
                    raise RowError(row.problem)
                contact = parse_row(row.fields, self.targets, self.attribute_types, self.now)
            except RowError as error:
                batch.rejects.append((row, str(error)))
                continue
            for target, warning in contact.warnings:
                batch.warnings.append((row.line, f"column {self._column(target)}: {warning}"))
            if contact.email in by_address:
                first, merged, _ = by_address[contact.email]
                merged.merge(contact)  # a later row's consent replaces an earlier one's
                if contact.consent_at is not None:
                    by_address[contact.email] = (first, merged, row.line)
                batch.merged += 1
            else:
                by_address[contact.email] = (row.line, contact, row.line)
        batch.records = [self._record(*held) for held in by_address.values()]
        return batch

    def _column(self, target: str) -> str:
        position = self.targets.index(target)
        return shown(self.header[position] if position < len(self.header) else target)

    def _record(self, line: int, contact: ContactRow, evidence_line: int) -> ContactRecord:
        provenance = {"file": self.file_name, "line": str(evidence_line)}
        has_consent = contact.consent_at is not None
        return ContactRecord(
            line, contact.email, address_hash(self.key, contact.email),
            contact.first_name, contact.last_name, contact.timezone, contact.locale,
            json.dumps(contact.attributes, ensure_ascii=False),
            tuple(sorted(contact.tags | self.tags)),
            contact.consent_at, contact.confirmed_at,
            canonical_evidence(contact.evidence | provenance) if has_consent else None,
            canonical_evidence(provenance) if contact.confirmed_at else None,
        )  # fmt: skip


def parsed_batches(
    reader: CsvReader, parser: BatchParser, in_background: bool
) -> Iterator[ParsedBatch]:
    """The batches in file order, parsed here or (`in_background`) in a forked child."""
    if not in_background or "fork" not in get_all_start_methods():
        for chunk in _chunks(reader.rows()):
            yield replace(parser(chunk), bytes_read=reader.bytes_read())
        return
    # fork, not spawn: spawn re-runs the caller's __main__, which a script without an
    # `if __name__ == "__main__"` guard cannot survive. The child reads the reader it inherits
    # (this process no longer touches it) and never uses the database connections it inherits.
    context = get_context("fork")
    batches: Queue[ParsedBatch | BaseException | None] = context.Queue(maxsize=IN_FLIGHT)
    child = context.Process(target=_produce, args=(reader, parser, batches), daemon=True)
    child.start()
    try:
        while (batch := _next(batches, child)) is not None:
            yield batch
    finally:
        if child.is_alive():
            child.terminate()
        child.join()


def _produce(
    reader: CsvReader, parser: BatchParser, batches: Queue[ParsedBatch | BaseException | None]
) -> None:
    """The child's work: every batch, then None; an error is sent, not lost."""
    try:
        for chunk in _chunks(reader.rows()):
            batches.put(replace(parser(chunk), bytes_read=reader.bytes_read()))
        batches.put(None)
    except BaseException as error:
        batches.put(error)


def _next(
    batches: Queue[ParsedBatch | BaseException | None], child: BaseProcess
) -> ParsedBatch | None:
    while True:
        try:
            item = batches.get(timeout=1)
        except Empty:
            if not child.is_alive():
                died = f"the import's parsing process died (exit {child.exitcode})"
                raise RuntimeError(died) from None
            continue
        if isinstance(item, BaseException):
            raise item
        return item


def _chunks(rows: Iterator[Row]) -> Iterator[list[Row]]:
    while chunk := list(islice(rows, BATCH_ROWS)):
        yield chunk
