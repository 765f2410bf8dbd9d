"""`mailer import` on stderr: one escaped line per rejected row or left-out cell."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from tests.conftest import SECRET


def test_import_prints_rows_and_cells_escaped_so_no_cell_forges_a_line_or_moves_the_terminal(
    project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    path = project / "people.csv"
    path.write_bytes(
        b"email,orders,timezone\n"
        b'"x\r\npeople.csv:99: forged\x1b[2J@",1,\n'
        b"ada@example.com,nan,\x1b]0;owned\x07Europe/Rome\n"
    )
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}
    result = CliRunner().invoke(cli, ["import", "people.csv", "--list", "newsletter"],
                                env=environment, catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("people.csv:2: 'x\\r\\npeople.csv:99: forged\\x1b[2J@' is not")
    assert lines[1:] == [  # the quoted address spans lines 2 and 3
        "people.csv:4: column 'timezone': '\\x1b]0;owned\\x07Europe/Rome' is not an IANA time "
        "zone (e.g. Europe/Rome, America/New_York); left out, the contact imports without it",
        "people.csv:4: column 'orders': 'nan' is not an integer; left out, the contact imports "
        "without it",
        "rejected rows written to people.rejects.csv",
    ]
    assert "1 imported" in result.stdout and "2 values left out or cut short" in result.stdout
