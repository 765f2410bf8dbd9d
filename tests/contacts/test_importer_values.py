"""No imported value can break the engine: whatever a cell holds, its row imports (maybe without
that cell) or is rejected with its line, and ticks and segments work afterwards, on both
databases. The example project's settings give the typed attributes and the segments."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailer.campaigns.engine import tick
from mailer.campaigns.segment_sql import SegmentCompiler, count_segment
from mailer.campaigns.segments import parse_segment
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts import importer
from mailer.contacts.importer import ImportSummary
from mailer.store.tables import contacts, enrollments
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.helpers import run_import

ROOT = Path(__file__).resolve().parent.parent.parent
HEADER = ["email", "first_name", "timezone", "locale", "signed_up_at", "birthday", "orders",
          "lifetime_value", "consent_at", "consent_confirmed_at"]  # fmt: skip
TYPED = ("signed_up_at", "birthday", "orders", "lifetime_value")  # date, date, integer, number


@pytest.fixture
def example(environ: dict[str, str]) -> Iterator[Workspace]:
    """The shipped example project (its attributes, segments and campaigns) on a test database."""
    workspace = Workspace(load_settings(ROOT / "settings.toml", environ=environ), FrozenClock(NOW))
    yield workspace
    workspace.close()


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for row in rows:
            writer.writerow([row.get(name, "") for name in HEADER])
    return path


def imported(workspace: Workspace, path: Path) -> tuple[ImportSummary, list[tuple[int, str]],
                                                         list[tuple[int, str]]]:  # fmt: skip
    rejected: list[tuple[int, str]] = []
    warned: list[tuple[int, str]] = []
    summary = importer.import_contacts(
        workspace.engine, path,
        importer.ImportOptions("newsletter", workspace.double_opt_in,
                               tags=("newsletter",), attribute_types=workspace.settings.attributes),
        workspace.key, workspace.clock, on_reject=lambda line, why: rejected.append((line, why)),
        on_warning=lambda line, why: warned.append((line, why)),
    )  # fmt: skip
    return summary, rejected, warned


def segment_counts(workspace: Workspace, now: datetime) -> dict[str, int]:
    compiler = SegmentCompiler.for_settings(workspace.settings, now)
    with workspace.engine.connect() as connection:
        return {
            name: count_segment(connection, compiler.where(parse_segment(text)))
            for name, text in workspace.settings.segments.items()
        }


def attributes(workspace: Workspace, email: str) -> dict[str, object]:
    with workspace.engine.connect() as connection:
        return dict(
            connection.scalar(select(contacts.c.attributes).where(contacts.c.email == email)) or {}
        )


GOOD = {"consent_at": "2026-01-05", "consent_confirmed_at": "2026-01-05T00:10:00Z"}


def test_non_finite_and_huge_numbers_are_left_out_with_a_warning_and_the_engine_runs(
    example: Workspace, tmp_path: Path
) -> None:
    path = write_rows(tmp_path / "shop.csv", [
        {"email": "nan@example.com", "lifetime_value": "nan", "orders": "2", **GOOD},
        {"email": "inf@example.com", "lifetime_value": "inf", **GOOD},
        {"email": "big@example.com", "lifetime_value": "1e999", **GOOD},
        {"email": "long@example.com", "orders": "9" * 400, "lifetime_value": "200", **GOOD},
    ])  # fmt: skip
    summary, rejected, warned = imported(example, path)
    assert (summary.imported, summary.rejected, summary.warnings) == (4, 0, 4)
    assert rejected == []
    assert warned == [
        (2, "column 'lifetime_value': 'nan' is not a finite number; left out, the contact "
            "imports without it"),
        (3, "column 'lifetime_value': 'inf' is not a finite number; left out, the contact "
            "imports without it"),
        (4, "column 'lifetime_value': '1e999' is not a finite number; left out, the contact "
            "imports without it"),
        (5, "column 'orders': '" + "9" * 77 + "...' is out of range for an integer (at most 19 "
            "digits); left out, the contact imports without it"),
    ]  # fmt: skip
    assert attributes(example, "nan@example.com") == {"orders": 2}
    assert attributes(example, "long@example.com") == {"lifetime_value": 200.0}
    tick(example.engine, example.settings, NOW)
    counts = segment_counts(example, NOW)
    assert (counts["big_spenders"], counts["repeat_buyers"]) == (1, 1)


def test_a_warning_names_the_column_as_the_file_does(example: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_text("E-Mail,Lifetime Value\nada@example.com,NaN\n", encoding="utf-8")
    _, _, warned = imported(example, path)
    assert warned == [(2, "column 'Lifetime Value': 'NaN' is not a finite number; left out, "
                          "the contact imports without it")]  # fmt: skip


def test_a_birthday_without_a_year_triggers_the_birthday_sequence(
    example: Workspace, tmp_path: Path
) -> None:
    path = write_rows(tmp_path / "mailchimp.csv", [
        {"email": "ada@example.com", "timezone": "Europe/London", "birthday": "03/17", **GOOD},
        {"email": "bob@example.com", "timezone": "Europe/London", "birthday": "03/18", **GOOD},
    ])  # fmt: skip
    summary, rejected, _ = imported(example, path)
    assert (summary.imported, rejected) == (2, [])
    assert attributes(example, "ada@example.com") == {"birthday": "1604-03-17"}
    tick(example.engine, example.settings, datetime(2027, 3, 17, 6, 0, tzinfo=UTC))
    with example.engine.connect() as connection:
        enrolled = connection.execute(
            select(contacts.c.email)
            .join(enrollments, enrollments.c.contact_id == contacts.c.id)
            .where(enrollments.c.campaign == "birthday")
        ).scalars()
        assert list(enrolled) == ["ada@example.com"]


NUMBERS = st.from_regex(r"\A[+-]?\d{1,400}(?:[.,]\d{0,20})?(?:[eE][+-]?\d{1,4})?\Z")
HOSTILE = st.sampled_from([
    "nan", "-NaN", "inf", "Infinity", "1e999", "-1e999", "9" * 400, "-" + "9" * 25, "1e308",
    "5e-324", "-0", "03/17", "02/29", "13/45", "--03-17", "0001-01-01", "9999-12-31",
    "20240312", "2024-W10-2", "true", "=1+1", "'=HYPERLINK(\"x\")", "x" * 300, "\x1b[2J",
    "a\r\nb", "Europe/Rome", "../../etc/passwd", "en_GB", " ", "١٢٣",
])  # fmt: skip
CELLS = st.one_of(HOSTILE, NUMBERS, st.text(max_size=40))


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(column=st.sampled_from([*TYPED, "first_name", "timezone", "locale"]), cell=CELLS,
       address=st.sampled_from(["ada@example.com", "bob@example.com"]))  # fmt: skip
def test_any_cell_in_a_typed_column_imports_or_rejects_its_row_and_the_engine_runs(
    example: Workspace, tmp_path: Path, column: str, cell: str, address: str
) -> None:
    path = write_rows(tmp_path / "any.csv", [{"email": address, column: cell, **GOOD}])
    summary, rejected, _ = imported(example, path)
    if rejected:  # only a NUL character can reject this row
        assert rejected[0][0] == 2 and "\x00" in cell
        assert summary.imported + summary.updated == 0
    else:
        assert summary.imported + summary.updated == 1
    tick(example.engine, example.settings, NOW)
    segment_counts(example, NOW)


def test_the_shipped_segments_count_after_an_import(example: Workspace) -> None:
    run_import(example, ROOT / "lists/newsletter.csv", "newsletter",
               rejects_path=example.settings.root / "never-written.csv")  # fmt: skip
    assert segment_counts(example, NOW)["repeat_buyers"] > 0
