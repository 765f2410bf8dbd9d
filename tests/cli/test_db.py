"""`mailer db current` and `mailer db upgrade`: which migration the database is at, bringing it
to the newest, and every command refusing a database that a newer mailer has upgraded."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner, Result
from sqlalchemy import text

from mailer.cli import cli
from mailer.store.engine import _alembic_config, create_database_engine, open_database
from mailer.store.revisions import newest_revision
from tests.conftest import SECRET
from tests.delivery.smtp_server import free_port

NEWEST = newest_revision()
Mailer = Callable[..., Result]


@pytest.fixture
def mailer(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Mailer:
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)

    return run


def at_revision(database_url: str, revision: str) -> None:
    engine = create_database_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)
    engine.dispose()


def revision_in(database_url: str) -> str | None:
    engine = create_database_engine(database_url)
    with engine.connect() as connection:
        exists = engine.dialect.has_table(connection, "alembic_version")
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalar() \
            if exists else None  # fmt: skip
    engine.dispose()
    return found


def stamp(database_url: str, revision: str) -> None:
    """What a newer mailer leaves behind: a revision this one has never heard of."""
    engine = create_database_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_current_says_an_old_database_needs_an_upgrade_and_does_not_upgrade_it(
    mailer: Mailer, database_url: str
) -> None:
    at_revision(database_url, "0012")
    result = mailer("db", "current")
    assert result.exit_code == 0, result.output
    assert "revision  0012" in result.stdout
    assert f"newest    {NEWEST}" in result.stdout
    assert "upgrade pending: run `mailer db upgrade`" in result.stdout
    assert revision_in(database_url) == "0012"


def test_current_check_exits_3_while_an_upgrade_is_pending_and_0_after(
    mailer: Mailer, database_url: str
) -> None:
    at_revision(database_url, "0012")
    assert mailer("db", "current", "--check").exit_code == 3
    assert mailer("db", "upgrade").exit_code == 0
    assert mailer("db", "current", "--check").exit_code == 0


def test_current_json(mailer: Mailer, database_url: str) -> None:
    at_revision(database_url, "0004")
    result = mailer("db", "current", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["revision"] == "0004"
    assert found["newest"] == NEWEST
    assert found["upgrade_pending"] is True
    assert "password" not in found["database"]


def test_upgrade_says_from_which_revision_to_which_then_already_current(
    mailer: Mailer, database_url: str
) -> None:
    at_revision(database_url, "0012")
    result = mailer("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"upgraded from 0012 to {NEWEST}" in result.stdout
    assert revision_in(database_url) == NEWEST
    again = mailer("db", "upgrade")
    assert again.exit_code == 0
    assert f"already current ({NEWEST})" in again.stdout


def test_upgrade_of_an_empty_database_creates_the_schema(mailer: Mailer, database_url: str) -> None:
    current = mailer("db", "current", "--json")
    assert json.loads(current.stdout)["revision"] is None
    result = mailer("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"created at {NEWEST}" in result.stdout
    assert revision_in(database_url) == NEWEST


def test_current_on_a_missing_sqlite_file_creates_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.delenv("MAILER_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["db", "current"], env={"MAILER_SECRET_KEY": SECRET})
    assert result.exit_code == 0, result.output
    assert "revision  none (no database yet" in result.stdout
    assert not (project / ".mailer").exists()


@pytest.mark.parametrize("args", [["db", "current"], ["db", "upgrade"], ["tick"], ["init"],
                                  ["outbox"]])  # fmt: skip
def test_every_command_refuses_a_database_newer_than_this_mailer(
    mailer: Mailer, database_url: str, args: list[str]
) -> None:
    at_revision(database_url, "head")
    stamp(database_url, "9025")
    result = mailer(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"mailer: the database is at revision 9025, newer than this mailer ({NEWEST}): "
        "upgrade mailer to the version that upgraded it (or restore a backup from before)"
    )
    assert revision_in(database_url) == "9025"


def test_serve_refuses_a_newer_database_before_saying_it_listens(
    mailer: Mailer, database_url: str
) -> None:
    at_revision(database_url, "head")
    stamp(database_url, "9025")
    result = mailer("serve", "--port", str(free_port()))
    assert result.exit_code == 1, result.output
    assert "newer than this mailer" in result.stderr
    assert "mailer serve:" not in result.stdout  # no "listening" line for a server that never was


def test_a_revision_neither_older_nor_newer_is_called_unknown(
    mailer: Mailer, database_url: str
) -> None:
    at_revision(database_url, "head")
    stamp(database_url, "feature_x")
    result = mailer("tick")
    assert result.exit_code == 1
    assert "the database is at revision feature_x, which this mailer does not know" in result.stderr


def test_opening_an_old_database_upgrades_it_and_logs_from_which_revision(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    at_revision(database_url, "0012")
    with caplog.at_level(logging.INFO, logger="mailer"):
        open_database(database_url).dispose()
    upgraded = [record for record in caplog.records if record.getMessage() == "database upgraded"]
    assert [(r.__dict__["from"], r.__dict__["to"]) for r in upgraded] == [("0012", NEWEST)]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailer"):
        open_database(database_url).dispose()  # current: nothing to say
    assert caplog.records == []
