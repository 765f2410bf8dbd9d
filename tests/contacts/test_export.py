from __future__ import annotations

import csv
import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailer.contacts.export import export_contacts
from mailer.store.tables import contacts
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import run_import


def exported(workspace: Workspace, list_name: str | None = None) -> str:
    out = io.StringIO()
    with workspace.engine.connect() as connection:
        export_contacts(connection, out, list_name)
    return out.getvalue()


def test_formula_cells_are_neutralised(workspace: Workspace, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        """
        email,first_name,note
        a@example.com,=cmd|' /C calc'!A0,@SUM(1+1)
        b@example.com,-2+3,plain
    """,
    )
    run_import(workspace, path, "newsletter")
    rows = list(csv.reader(io.StringIO(exported(workspace))))
    assert rows[0] == ["email", "first_name", "last_name", "timezone", "locale", "tags", "note"]
    assert rows[1][1] == "'=cmd|' /C calc'!A0" and rows[1][6] == "'@SUM(1+1)"
    assert rows[2][1] == "'-2+3"


def test_cells_holding_the_tag_separator_are_quoted(workspace: Workspace, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        """
        email,tags,note
        a@example.com,vip;beans,"=1;2"
        b@example.com,solo,plain
    """,
    )
    run_import(workspace, path, "newsletter")
    lines = exported(workspace).splitlines()
    assert lines[1:] == ['a@example.com,,,,,"beans;vip","\'=1;2"', "b@example.com,,,,,solo,plain"]


def test_export_of_one_list(workspace: Workspace, tmp_path: Path) -> None:
    run_import(workspace, write_csv(tmp_path / "a.csv", "email\na@example.com\n"), "newsletter")
    run_import(workspace, write_csv(tmp_path / "b.csv", "email\nb@example.com\n"), "leads")
    lines = exported(workspace, "leads").splitlines()
    assert lines[1:] == ["b@example.com,,,,,lead"]


names = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
        min_size=1,
        max_size=20,
    )
    .map(lambda s: " ".join(s.split()))
    .filter(bool)
)
cell_characters = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
values = st.text(alphabet=cell_characters, min_size=1, max_size=20).map(str.strip).filter(bool)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=names, note=values)
def test_export_then_import_gives_the_same_contacts(
    workspace: Workspace, tmp_path: Path, first: str, note: str
) -> None:
    out = tmp_path / "rt.csv"
    out.write_text(f"email,first_name,note\nrt@example.com,{_quote(first)},{_quote(note)}\n")
    run_import(workspace, out, "newsletter")
    before = _snapshot(workspace)
    out.write_text(exported(workspace), encoding="utf-8", newline="")
    run_import(workspace, out, "newsletter")
    assert _snapshot(workspace) == before
    assert before[0][1] == first.strip() and before[0][2] == {"note": note}


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _snapshot(workspace: Workspace) -> list[tuple[object, ...]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(contacts.c.email, contacts.c.first_name, contacts.c.attributes)
        )
        return [tuple(row) for row in rows]
