"""The parsing half of an import: CSV rows in, batches of validated, merged contacts out.

(Parsing in a second process while this one writes was measured and dropped: on the 2-core
reference machine both halves slowed down by as much as they overlapped.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

from mailer.contacts.addresses import address_hash
from mailer.contacts.csvfile import Row
from mailer.contacts.rows import ContactRow, RowError, parse_row

BATCH_ROWS = 20000


@dataclass
class ParsedBatch:
    contacts: list[tuple[int, ContactRow, str]] = field(default_factory=list)  # line, row, hash
    rejects: list[tuple[Row, str]] = field(default_factory=list)
    merged: int = 0  # rows folded into an earlier row for the same address


@dataclass(frozen=True)
class BatchParser:
    """Turns a chunk of CSV rows into a ParsedBatch."""

    targets: list[str]
    attribute_types: Mapping[str, str]
    tags: frozenset[str]
    now: datetime
    key: bytes

    def __call__(self, chunk: list[Row]) -> ParsedBatch:
        batch = ParsedBatch()
        by_address: dict[str, tuple[int, ContactRow]] = {}
        for row in chunk:
            try:
                if row.problem:
                    raise RowError(row.problem)
                contact = parse_row(row.fields, self.targets, self.attribute_types, self.now)
            except RowError as error:
                batch.rejects.append((row, str(error)))
                continue
            contact.tags |= self.tags
            if contact.email in by_address:
                by_address[contact.email][1].merge(contact)
                batch.merged += 1
            else:
                by_address[contact.email] = (row.line, contact)
        batch.contacts = [
            (line, contact, address_hash(self.key, email))
            for email, (line, contact) in by_address.items()
        ]
        return batch


def parsed_batches(rows: Iterable[Row], parser: BatchParser) -> Iterator[ParsedBatch]:
    """The batches in file order."""
    return map(parser, _chunks(iter(rows)))


def _chunks(rows: Iterator[Row]) -> Iterator[list[Row]]:
    while chunk := list(islice(rows, BATCH_ROWS)):
        yield chunk
