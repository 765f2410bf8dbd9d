from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.consent.person import consent_overview, erase_person, withdraw
from mailer.contacts import batches, importer
from mailer.contacts.csvfile import unneutralise
from mailer.errors import InputFileError
from mailer.store.tables import (
    consent_entries,
    consent_evidence,
    contact_tags,
    contacts,
    memberships,
)
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import count, run_import


def statuses(workspace: Workspace, email: str) -> dict[str, str]:
    with workspace.engine.connect() as connection:
        overview = consent_overview(connection, workspace.key, email, ["newsletter", "leads"])
    return {row.list: row.status for row in overview.lists}


def contact(workspace: Workspace, email: str) -> dict[str, object]:
    with workspace.engine.connect() as connection:
        row = connection.execute(select(contacts).where(contacts.c.email == email)).one()
    return dict(row._mapping)


def test_import_creates_contacts_with_attributes_tags_and_membership(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "people.csv",
        """
        email,first_name,last_name,orders,favourite,tags,timezone,locale
        Ada@Example.COM,Ada,Lovelace,3,espresso,vip;beans,Europe/London,en-gb
        bob@example.org,Bob,,0,,,,
    """,
    )
    summary = run_import(workspace, path, "newsletter")
    assert (summary.imported, summary.updated, summary.rejected) == (2, 0, 0)
    ada = contact(workspace, "ada@example.com")
    assert ada["first_name"] == "Ada"
    assert ada["attributes"] == {"orders": 3, "favourite": "espresso"}
    assert (ada["timezone"], ada["locale"]) == ("Europe/London", "en_GB")
    assert count(workspace, contact_tags, contact_tags.c.contact_id == ada["id"]) == 2
    assert count(workspace, memberships) == 2
    assert summary.rejects_file is None


def test_duplicates_in_file_and_database_update_never_duplicate(
    workspace: Workspace, tmp_path: Path
) -> None:
    first = write_csv(
        tmp_path / "a.csv",
        """
        email,first_name,city
        ada@example.com,Ada,London
        ADA@example.com,,Paris
    """,
    )
    summary = run_import(workspace, first, "newsletter")
    assert (summary.imported, summary.updated) == (1, 1)
    second = write_csv(
        tmp_path / "b.csv",
        """
        email,last_name
        Ada@Example.com,Lovelace
    """,
    )
    summary = run_import(workspace, second, "leads")
    assert (summary.imported, summary.updated) == (0, 1)
    assert count(workspace, contacts) == 1
    ada = contact(workspace, "ada@example.com")
    # an empty cell never erases; later values win
    assert (ada["first_name"], ada["last_name"]) == ("Ada", "Lovelace")
    assert ada["attributes"] == {"city": "Paris"}
    assert count(workspace, memberships) == 2


def test_duplicates_across_batches_update(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "BATCH_ROWS", 2)
    path = write_csv(
        tmp_path / "a.csv",
        """
        email,n
        a@example.com,1
        b@example.com,2
        c@example.com,3
        a@example.com,4
    """,
    )
    summary = run_import(workspace, path, "newsletter")
    assert (summary.imported, summary.updated) == (3, 1)
    assert contact(workspace, "a@example.com")["attributes"] == {"n": "4"}


def test_bad_rows_are_reported_with_line_and_written_to_rejects(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(
        b"email,first_name,orders\n"
        b"good@example.com,Good,1\n"
        b"zoe@example.com,Zo\xc3\xab,1\n"  # UTF-8, so the file reads as UTF-8
        b"bob@,Bob,1\n"
        b"short@example.com\n"
        b'"multi@example.com","Multi\nLine",2\n'
        b"latin@example.com,Ren\xe9e,1\n"  # a Latin-1 byte in a UTF-8 file
        b"count@example.com,Count,many\n"
        b"last@example.com,Last,5\n"
    )
    reported: list[tuple[int, str]] = []
    warned: list[tuple[int, str]] = []
    summary = importer.import_contacts(
        workspace.engine, path,
        importer.ImportOptions("newsletter", workspace.double_opt_in,
                               attribute_types=workspace.settings.attributes),
        workspace.key, workspace.clock, on_reject=lambda line, why: reported.append((line, why)),
        on_warning=lambda line, why: warned.append((line, why)),
    )  # fmt: skip
    assert summary.imported == 5
    assert [line for line, _ in reported] == [4, 5, 8]
    reasons = dict(reported)
    assert "not an email address" in reasons[4]
    assert "expected 3 columns, found 1" in reasons[5]
    assert "undecodable" in reasons[8]
    # a value that does not fit its column is left out; the contact imports
    assert warned == [(9, "column 'orders': 'many' is not an integer; left out, the contact "
                          "imports without it")]  # fmt: skip
    assert contact(workspace, "count@example.com")["attributes"] == {}
    assert summary.rejects_file == str(tmp_path / "leads.rejects.csv")
    with open(summary.rejects_file, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["line", "error", "email", "first_name", "orders"]
    assert [row[0] for row in rows[1:]] == ["4", "5", "8"]
    assert rows[3][3].encode("utf-8", "surrogateescape") == b"Ren\xe9e"  # raw bytes kept
    # the multi-line name arrives on one line: CR/LF never reach a header
    assert contact(workspace, "multi@example.com")["first_name"] == "Multi Line"


def test_latin1_semicolon_file_with_bom_less_header_is_detected(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "leads.csv", """
        Email Address;First Name;Notes
        rene@example.fr;René;=HYPERLINK("http://evil")
        jurgen@example.de;Jürgen;ok
    """, encoding="cp1252")  # fmt: skip
    summary = run_import(workspace, path, "leads")
    assert summary.imported == 2
    assert contact(workspace, "rene@example.fr")["first_name"] == "René"
    assert contact(workspace, "rene@example.fr")["attributes"] == {}  # Notes mapped to "-"


def test_utf8_bom_and_idn_domain(workspace: Workspace, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "\ufeffemail\nlena@XN--bcher-kva.example\n")
    run_import(workspace, path, "newsletter")
    path = write_csv(tmp_path / "b.csv", "email\nLena@bücher.example\n")
    summary = run_import(workspace, path, "newsletter")
    assert (summary.imported, summary.updated) == (0, 1)
    assert contact(workspace, "lena@bücher.example")["email"] == "lena@bücher.example"


def test_unreadable_files_raise_input_file_error(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        run_import(workspace, tmp_path / "missing.csv", "newsletter")
    path = write_csv(tmp_path / "nomail.csv", "name,phone\nAda,123\n")
    with pytest.raises(InputFileError, match=r"nomail.csv:1: no email column"):
        run_import(workspace, path, "newsletter")
    empty = write_csv(tmp_path / "empty.csv", "")
    with pytest.raises(InputFileError, match="empty"):
        run_import(workspace, empty, "newsletter")


def test_evidence_becomes_ledger_entries_and_rows_without_evidence_grant_nothing(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "leads.csv",
        """
        email,consent_at,consent_source,consent_ip,consent_text_version
        ada@example.com,2026-03-01T09:30:00+01:00,landing page /spring,203.0.113.7,v3
        bob@example.com,,,,
    """,
    )
    summary = run_import(workspace, path, "leads")
    assert summary.consent_recorded == 1
    assert statuses(workspace, "ada@example.com")["leads"] == "granted"
    assert statuses(workspace, "bob@example.com")["leads"] == "none"
    with workspace.engine.connect() as connection:
        entry = connection.execute(select(consent_entries)).one()
        evidence = json.loads(connection.scalar(select(consent_evidence.c.data)) or "null")
    assert (entry.action, entry.source, entry.purpose) == ("granted", "import", "leads")
    assert entry.occurred_at.isoformat() == "2026-03-01T08:30:00+00:00"
    assert evidence == {"source": "landing page /spring", "ip": "203.0.113.7",
                        "text_version": "v3", "file": "leads.csv", "line": "2"}  # fmt: skip


def test_double_opt_in_list_needs_a_confirmation(workspace: Workspace, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "news.csv",
        """
        email,consent_at,consent_confirmed_at
        ada@example.com,2026-03-01,2026-03-01T00:05:00Z
        bob@example.com,2026-03-01,
    """,
    )
    run_import(workspace, path, "newsletter")
    assert statuses(workspace, "ada@example.com")["newsletter"] == "confirmed"
    assert statuses(workspace, "bob@example.com")["newsletter"] == "pending"


def test_reimport_is_idempotent_for_consent(workspace: Workspace, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "leads.csv",
        """
        email,consent_at
        ada@example.com,2026-03-01
    """,
    )
    run_import(workspace, path, "leads")
    summary = run_import(workspace, path, "leads")
    assert summary.consent_recorded == 0
    assert count(workspace, consent_entries) == 1


def test_withdrawn_consent_is_never_regranted_by_import(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "leads.csv",
        """
        email,consent_at
        ada@example.com,2026-03-01
    """,
    )
    run_import(workspace, path, "leads")
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "ada@example.com", workspace.double_opt_in,
                 workspace.clock.now(), list_name="leads")  # fmt: skip
    later = write_csv(
        tmp_path / "later.csv",
        """
        email,consent_at
        ada@example.com,2026-11-01
    """,
    )
    summary = run_import(workspace, later, "leads")
    assert summary.consent_recorded == 0
    assert statuses(workspace, "ada@example.com")["leads"] == "withdrawn"


def test_suppressed_and_erased_addresses_are_not_resubscribed(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "leads.csv",
        """
        email,first_name,consent_at
        ada@example.com,Ada,2026-03-01
        bob@example.com,Bob,2026-03-01
        cy@example.com,Cy,2026-03-01
    """,
    )
    run_import(workspace, path, "leads")
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "ada@example.com", workspace.double_opt_in,
                 workspace.clock.now())  # every list: suppressed  # fmt: skip
        erase_person(connection, workspace.key, "BOB@example.com", workspace.clock.now())
    summary = run_import(workspace, path, "leads")
    assert (summary.suppressed, summary.updated, summary.imported) == (2, 1, 0)
    assert count(workspace, contacts, contacts.c.email == "bob@example.com") == 0
    assert statuses(workspace, "ada@example.com")["leads"] == "withdrawn"


def test_evidence_without_consent_at_and_future_consent_are_rejected(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "leads.csv",
        """
        email,consent_at,consent_ip
        ada@example.com,,203.0.113.7
        bob@example.com,2027-01-01,203.0.113.8
        cy@example.com,12/03/2024,
    """,
    )
    summary = run_import(workspace, path, "leads")
    assert summary.rejected == 3
    assert count(workspace, consent_entries) == 0


def test_a_pending_consent_is_completed_only_by_a_confirmation(
    workspace: Workspace, tmp_path: Path
) -> None:
    pending = write_csv(
        tmp_path / "news.csv",
        """
        email,consent_at
        bob@example.com,2026-03-01
    """,
    )
    run_import(workspace, pending, "newsletter")
    assert run_import(workspace, pending, "newsletter").consent_recorded == 0
    confirmed = write_csv(
        tmp_path / "confirmed.csv",
        """
        email,consent_at,consent_confirmed_at
        bob@example.com,2026-03-01,2026-03-02
    """,
    )
    assert run_import(workspace, confirmed, "newsletter").consent_recorded == 1
    assert statuses(workspace, "bob@example.com")["newsletter"] == "confirmed"


def test_an_unclosed_quote_is_reported_where_it_opens(workspace: Workspace, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        """
        email,first_name
        a@example.com,"Ada
        b@example.com,Bob
    """,
    )
    reported: list[tuple[int, str]] = []
    summary = importer.import_contacts(
        workspace.engine, path, importer.ImportOptions("newsletter", workspace.double_opt_in),
        workspace.key, workspace.clock, on_reject=lambda line, why: reported.append((line, why)),
    )  # fmt: skip
    assert summary.rejected == 1
    assert reported == [
        (
            2,
            "a quote opened in this row is never closed, so every line after "
            "it was read as one field; close the quote and import again",
        )
    ]


@pytest.fixture
def parse_in_background(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every file big enough for the forked parser, and batches small enough to see."""
    monkeypatch.setattr(importer, "BACKGROUND_FROM_BYTES", 0)
    monkeypatch.setattr(batches, "BATCH_ROWS", 2)


@pytest.mark.usefixtures("parse_in_background")
def test_the_forked_parser_gives_the_same_result(workspace: Workspace, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        """
        email,first_name,consent_at
        a@example.com,Ada,2026-03-01
        bob@,Bob,
        c@example.com,Cy,2026-03-01
        A@example.com,Ada Lovelace,
        d@example.com,Dee,
    """,
    )
    reported: list[tuple[int, str]] = []
    progress: list[tuple[int, int]] = []
    summary = importer.import_contacts(
        workspace.engine, path, importer.ImportOptions("leads", workspace.double_opt_in),
        workspace.key, workspace.clock, progress=lambda done, size: progress.append((done, size)),
        on_reject=lambda line, why: reported.append((line, why)),
    )  # fmt: skip
    assert (summary.imported, summary.updated, summary.rejected) == (3, 1, 1)
    assert summary.consent_recorded == 2
    assert [line for line, _ in reported] == [3]
    assert contact(workspace, "a@example.com")["first_name"] == "Ada Lovelace"
    assert progress[-1] == (path.stat().st_size, path.stat().st_size)


@pytest.mark.usefixtures("parse_in_background")
def test_an_error_in_the_forked_parser_reaches_the_caller(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(batches, "parse_row", broken)
    path = write_csv(tmp_path / "a.csv", "email\na@example.com\n")
    with pytest.raises(RuntimeError, match="parser exploded"):
        run_import(workspace, path, "leads")
    assert count(workspace, contacts) == 0


def test_the_rejects_file_neutralises_formulas_and_quotes_the_tag_separator(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        """
        email,note,tags
        =HYPERLINK("http://evil.example")@,@SUM(A1),a;b
        -2+3,+1,ok
    """,
    )
    summary = run_import(workspace, path, "newsletter")
    assert summary.rejected == 2 and summary.rejects_file is not None
    text = Path(summary.rejects_file).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[1].startswith('2,"\'=HYPERLINK(""http://evil.example"")@\' is not an email')
    assert lines[1].endswith(',"\'=HYPERLINK(""http://evil.example"")@",\'@SUM(A1),"a;b"')
    assert lines[2].endswith(",'-2+3,'+1,ok")
    # fixed in a spreadsheet and imported again, the cells read as they were
    rows = list(csv.reader(io.StringIO(text)))
    assert [unneutralise(cell) for cell in rows[1][2:]] == [
        '=HYPERLINK("http://evil.example")@',
        "@SUM(A1)",
        "a;b",
    ]


def test_a_cell_over_128_kib_rejects_its_row_only(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    before = "".join(f"before{n}@example.com,B\n" for n in range(30))
    after = "".join(f"after{n}@example.com,A\n" for n in range(300))
    huge = '"' + "\n".join(["y" * 99] * 1500) + '"'
    path.write_text(f"email,first_name\n{before}big@example.com,{huge}\n{after}")
    summary = run_import(workspace, path, "newsletter")
    assert (summary.imported, summary.rejected) == (330, 1)
    assert count(workspace, contacts, contacts.c.email == "after299@example.com") == 1
