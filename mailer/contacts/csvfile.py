"""Reading contact CSV files as spreadsheets and landing-page tools export them: UTF-8 (with
or without BOM), UTF-16 with BOM, or Latin-1/Windows-1252; comma, semicolon, tab or pipe
delimited; quoted fields spanning lines. Rows come out with the line they start on, streamed,
never all in memory."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from mailer.errors import InputFileError

DELIMITERS = ",;\t|"
SAMPLE_BYTES = 64 * 1024
# Neutralises spreadsheet formulas on export (OWASP "CSV injection"); undone on import.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")

Encoding = Literal["utf-8", "utf-8-sig", "utf-16", "cp1252"]


def detect_encoding(sample: bytes) -> Encoding:
    """UTF-8 when the sample reads as UTF-8 (or mostly does: a few broken rows are rejected one
    by one later); otherwise Windows-1252, the superset of Latin-1 that spreadsheets write."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # Excel's "Unicode text" export
    utf8_characters = len(_UTF8_SEQUENCE.findall(sample))
    high_bytes = len(_HIGH_BYTE.findall(sample))
    stray_bytes = high_bytes - sum(len(s) for s in _UTF8_SEQUENCE.findall(sample))
    return "utf-8" if stray_bytes == 0 or utf8_characters >= stray_bytes else "cp1252"


def detect_delimiter(header_line: str) -> str:
    """The candidate that splits the header most often; a comma when none does."""
    counts = {candidate: header_line.count(candidate) for candidate in DELIMITERS}
    best = max(counts, key=lambda candidate: counts[candidate])
    return best if counts[best] else ","


def undecodable(fields: list[str]) -> bool:
    """Whether a row holds bytes the file's encoding could not decode (kept as surrogates)."""
    try:
        "".join(fields).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unneutralise(value: str) -> str:
    """Undo the apostrophe our export puts before a formula-like cell, so exports re-import."""
    if len(value) > 1 and value[0] == "'" and value[1] in "=+-@\t\r":
        return value[1:]
    return value


def neutralise(value: str) -> str:
    """Make a cell inert in spreadsheets: a leading =, +, -, @, tab or CR starts a formula."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


@dataclass(frozen=True)
class Row:
    line: int  # where the record starts in the file (1 = the header)
    fields: list[str]
    problem: str | None = None  # why the record could not be read as CSV


CELL_LIMIT = csv.field_size_limit()  # 131,072 characters (128 KiB): the csv module's own
_TOO_LONG = (
    f"a cell is longer than {CELL_LIMIT:,} characters (128 KiB), more than any contact field "
    "needs: shorten it; the rows after it are read as usual"
)
_UNCLOSED = (
    "a quote opened in this row is never closed, so every line after it was read as one "
    "field; close the quote and import again"
)
_CSV_PROBLEMS = {
    "unexpected end of data": _UNCLOSED,
    "',' expected after '\"'": 'a quote inside a quoted field must be doubled ("")',
}


class _Lines:
    """The file's lines as the CSV reader takes them, counted, with the lines of the record
    being read kept, so that after an oversized cell reading can resume where the record ends."""

    def __init__(self, text: IO[str]) -> None:
        self.count = 0  # lines handed out (the header not included)
        self.record: list[str] = []  # the lines of the record being read
        self._source = self._read(text)

    def _read(self, text: IO[str]) -> Iterator[str]:
        record = self.record
        for line in text:
            self.count += 1
            record.append(line)
            yield line

    def __iter__(self) -> Iterator[str]:
        return self._source

    def skip_record(self, delimiter: str) -> bool:
        """Read on to the end of the record the CSV reader gave up on (its lines so far are in
        `record`); return False when the file ends first, inside a quoted cell."""
        state, ended = _scan("".join(self.record), delimiter, _START)
        while not ended:
            line = next(self._source, None)
            if line is None:
                return state != _QUOTED
            state, ended = _scan(line, delimiter, state)
        return True


_START, _UNQUOTED, _QUOTED, _AFTER_QUOTE = range(4)


def _scan(text: str, delimiter: str, state: int) -> tuple[int, bool]:
    """Follow the CSV grammar over `text` from `state`: (the state at its end, whether a record
    ended in it). Only for resynchronising after an error, so plain Python is fast enough."""
    position = 0
    while position < len(text):
        if state == _QUOTED:  # jump to the next quote: a closing one or the first of a pair
            found = text.find('"', position)
            if found < 0:
                return _QUOTED, False
            state, position = _AFTER_QUOTE, found + 1
            continue
        character = text[position]
        if character == '"' and state in (_START, _AFTER_QUOTE):
            state = _QUOTED  # an opening quote, or the second of a doubled pair
        elif character == delimiter:
            state = _START
        elif character in "\r\n":
            return state, True
        else:
            state = _UNQUOTED
        position += 1
    return state, False


_MIXED = (
    "mixes UTF-8 and Windows-1252 text, so some of its letters would come out wrong: save the "
    "file as UTF-8 (CSV UTF-8 in Excel) and import again"
)


def _as_written(line: int, fields: list[str]) -> Row:
    """A row of a Windows-1252 file, read as UTF-8 when that is how it was saved (a spreadsheet
    adding rows to an older export): `JÃ¼rgen` becomes `Jürgen`. A row that mixes the two
    comes out with a problem: either reading garbles some of it."""
    utf8, cp1252, decoded = False, False, []
    for field in fields:
        if field.isascii():
            decoded.append(field)
            continue
        raw = field.encode("cp1252", "surrogateescape")
        try:
            decoded.append(raw.decode("utf-8"))
            utf8 = True
        except UnicodeDecodeError:
            if _UTF8_SEQUENCE.search(raw):
                return Row(line, fields, _MIXED)
            decoded.append(field)
            cp1252 = True
    if utf8 and cp1252:
        return Row(line, fields, _MIXED)
    return Row(line, decoded if utf8 else fields)


class CsvReader:
    """A CSV file opened for streaming; use as a context manager."""

    def __init__(self, path: Path, delimiter: str | None = None, shown: Path | None = None) -> None:
        self.path = shown or path  # how messages name the file
        try:
            self._binary: IO[bytes] = path.open("rb")
        except FileNotFoundError:
            raise InputFileError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise InputFileError(f"{self.path}: is a folder, not a CSV file") from None
        except PermissionError:
            raise InputFileError(f"{self.path}: permission denied") from None
        self.size = path.stat().st_size
        self.encoding = detect_encoding(self._binary.read(SAMPLE_BYTES))
        self._binary.seek(0)
        self._text = io.TextIOWrapper(
            self._binary, encoding=self.encoding, errors="surrogateescape", newline=""
        )
        first_line = self._text.readline()
        if not first_line.strip():
            self.close()
            raise InputFileError(f"{self.path}: is empty; the first line must be a header")
        self.delimiter = delimiter or detect_delimiter(first_line)
        header_rows = list(csv.reader([first_line], delimiter=self.delimiter))
        self.header = [name.strip() for name in header_rows[0]]
        self._lines = _Lines(self._text)
        self._reader = csv.reader(self._lines, delimiter=self.delimiter, strict=True)

    def rows(self) -> Iterator[Row]:
        """The data rows, blank lines skipped; a record the CSV reader cannot parse comes out
        with `problem` set, and reading goes on with the next record."""
        lines, last_line = self._lines, 1
        while True:
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except csv.Error as error:
                problem = _CSV_PROBLEMS.get(str(error), str(error))
                if str(error).startswith("field larger than field limit"):
                    problem = _TOO_LONG if lines.skip_record(self.delimiter) else _UNCLOSED
                start, last_line = last_line + 1, lines.count + 1
                lines.record.clear()
                yield Row(start, [], problem)
                continue
            start, last_line = last_line + 1, lines.count + 1
            lines.record.clear()
            if fields and any(field.strip() for field in fields):
                if self.encoding == "cp1252" and not all(map(str.isascii, fields)):
                    yield _as_written(start, fields)
                else:
                    yield Row(start, fields)

    def bytes_read(self) -> int:
        """How far into the file reading has got (for progress bars)."""
        return self._binary.tell()

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# A cell holding one of these is quoted: the comma, the quote and line breaks as RFC 4180 says,
# and the tag separator `;`, which spreadsheets in semicolon locales split on (or evaluate).
_NEEDS_QUOTES = re.compile(r'[,;"\r\n]')


def spreadsheet_line(cells: Iterable[str]) -> str:
    """One CSV record for a spreadsheet to open: every cell neutralised, quoted where needed."""
    return ",".join(map(_spreadsheet_cell, cells)) + "\r\n"


def _spreadsheet_cell(value: str) -> str:
    value = neutralise(value)
    return '"' + value.replace('"', '""') + '"' if _NEEDS_QUOTES.search(value) else value


class RejectsWriter:
    """Bad rows, written as they are found to `<name>.rejects.csv` with their line and reason,
    ready to fix and import again. The file is only created when a first row is rejected."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = path
        self._header = header
        self._file: IO[str] | None = None
        self.count = 0

    def write(self, line: int, reason: str, fields: list[str]) -> None:
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8", errors="surrogateescape", newline="")
            self._file.write(spreadsheet_line(["line", "error", *self._header]))
        self._file.write(spreadsheet_line([str(line), reason, *fields]))
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
