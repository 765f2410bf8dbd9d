from __future__ import annotations

import csv
import io
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailer.contacts.csvfile import (
    CsvReader,
    detect_delimiter,
    detect_encoding,
    neutralise,
    unneutralise,
)


def test_encoding_detection() -> None:
    assert detect_encoding(b"\xef\xbb\xbfemail\n") == "utf-8-sig"
    assert detect_encoding("email,name\na@b.c,Zoë\n".encode()) == "utf-8"
    assert detect_encoding("email;name\na@b.c;Renée\n".encode("cp1252")) == "cp1252"
    assert detect_encoding(b"email\na@b.c\n") == "utf-8"
    assert detect_encoding("email\ta\n".encode("utf-16")) == "utf-16"


def test_delimiter_detection() -> None:
    assert detect_delimiter("email;first name;last name\r\n") == ";"
    assert detect_delimiter("email\tname\n") == "\t"
    assert detect_delimiter("email|name\n") == "|"
    assert detect_delimiter("email\n") == ","


def test_rows_carry_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b'email,note\r\na@x.com,"two\r\nlines"\r\n\r\nb@x.com,one\r\n')
    with CsvReader(path) as reader:
        rows = [(row.line, row.fields) for row in reader.rows()]
    assert rows == [(2, ["a@x.com", "two\r\nlines"]), (5, ["b@x.com", "one"])]


cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(cells)
def test_neutralised_cells_never_start_a_formula_and_read_back(value: str) -> None:
    guarded = neutralise(value)
    assert not guarded.startswith(("=", "+", "-", "@"))
    assert unneutralise(guarded) == value or value.startswith("'")


@given(st.lists(st.lists(cells, min_size=3, max_size=3), min_size=1, max_size=20))
def test_csv_round_trip_through_the_reader(tmp_path_factory, rows: list[list[str]]) -> None:  # type: ignore[no-untyped-def]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["email", "a", "b"])
    writer.writerows(rows)
    path = tmp_path_factory.mktemp("rt") / "rt.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    with CsvReader(path, delimiter=",") as reader:
        read = [row.fields for row in reader.rows()]
    expected = [row for row in rows if any(cell.strip() for cell in row)]
    assert read == expected


def test_a_bad_quote_is_one_bad_row_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b'email,note\na@x.com,"say "hi""\nb@x.com,ok\n')
    with CsvReader(path) as reader:
        rows = list(reader.rows())
    assert rows[0].line == 2 and rows[0].problem == (
        'a quote inside a quoted field must be doubled ("")'
    )
    assert (rows[1].line, rows[1].fields) == (3, ["b@x.com", "ok"])


def test_excel_unicode_text_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("email\tname\r\nzoe@x.com\tZoë\r\n".encode("utf-16"))
    with CsvReader(path) as reader:
        assert [row.fields for row in reader.rows()] == [["zoe@x.com", "Zoë"]]


def rows_of(path: Path) -> list[tuple[int, list[str], str | None]]:
    with CsvReader(path) as reader:
        return [(row.line, row.fields, row.problem) for row in reader.rows()]


def test_only_the_row_with_a_cell_over_128_kib_is_rejected_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    huge = '"' + "\r\n".join(['a "", b; c' + "x" * 90] * 2000) + '"'  # 2,000 lines, ~200 KiB
    path = tmp_path / "a.csv"
    path.write_text(f"email,note\r\na@x.com,one\r\nb@x.com,{huge},more\r\nc@x.com,\"q\"\"\"\r\n"
                    "d@x.com,last\r\n", encoding="utf-8", newline="")  # fmt: skip
    rows = rows_of(path)
    assert [(line, fields) for line, fields, _ in rows] == [
        (2, ["a@x.com", "one"]), (3, []), (2003, ["c@x.com", 'q"']), (2004, ["d@x.com", "last"]),
    ]  # fmt: skip
    assert rows[1][2] is not None and rows[1][2].startswith(
        "a cell is longer than 131,072 characters (128 KiB)"
    )


def test_a_long_unquoted_cell_rejects_only_its_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(f"email,note\na@x.com,{'x' * 200_000}\nb@x.com,ok\n", encoding="utf-8")
    rows = rows_of(path)
    assert [(line, fields) for line, fields, _ in rows] == [(2, []), (3, ["b@x.com", "ok"])]
    assert rows[0][2] is not None and rows[0][2].startswith("a cell is longer than 131,072")


def test_a_quote_never_closed_over_128_kib_is_reported_as_never_closed(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('email,note\na@x.com,"open\n' + "b@x.com,x\n" * 20_000, encoding="utf-8")
    rows = rows_of(path)
    assert [(line, problem) for line, _, problem in rows] == [(2, (
        "a quote opened in this row is never closed, so every line after it was read as one "
        "field; close the quote and import again"))]  # fmt: skip


def test_utf8_rows_in_a_windows_1252_file_are_read_as_utf8_and_mixed_rows_rejected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(
        b"email;first;last\r\n"
        + "rene@x.com;René;Lefèvre\r\n".encode("cp1252") * 30  # mostly Windows-1252
        + "jurgen@x.com;Jürgen;Müller\r\n".encode()  # a row added as UTF-8
        + b"mix@x.com;" + "Jürgen;".encode() + "Müller\r\n".encode("cp1252")
        + b"ascii@x.com;Ada;Lovelace\r\n"
    )  # fmt: skip
    rows = rows_of(path)
    assert rows[0] == (2, ["rene@x.com", "René", "Lefèvre"], None)
    assert rows[30] == (32, ["jurgen@x.com", "Jürgen", "Müller"], None)
    assert rows[31][0] == 33 and rows[31][2] is not None
    assert rows[31][2].startswith("mixes UTF-8 and Windows-1252 text")
    assert rows[32] == (34, ["ascii@x.com", "Ada", "Lovelace"], None)
