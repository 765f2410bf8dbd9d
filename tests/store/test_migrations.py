from __future__ import annotations

from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import StatementError

from mailer.store.engine import open_database, schema_is_current
from mailer.store.tables import lists, memberships, metadata


def test_migrations_build_exactly_the_declared_tables(database_url: str) -> None:
    engine = open_database(database_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


def test_opening_again_is_a_no_op(database_url: str) -> None:
    open_database(database_url).dispose()
    engine = open_database(database_url)
    assert schema_is_current(engine)
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_naive_times_are_refused(database_url: str) -> None:
    engine = open_database(database_url)
    naive = datetime(2026, 1, 1)
    with pytest.raises((StatementError, ValueError), match="naive datetime"), engine.begin() as db:
        db.execute(lists.insert().values(id=1, name="x", title="x", double_opt_in=False))
        db.execute(memberships.insert().values(list_id=1, contact_id=1, joined_at=naive, source=""))
    engine.dispose()
