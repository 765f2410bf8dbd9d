"""INSERT ... ON CONFLICT DO UPDATE / DO NOTHING, the same call on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from mailer.store.bulk import execute_many

FEW = 50  # below this many rows, compiling once per call costs more than it saves


def upsert(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]] | Sequence[Sequence[Any]],
    keys: Sequence[str],
    update: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> None:
    """Insert `rows` (mappings, or tuples in the order of `columns`); where a row with the
    same `keys` exists, overwrite its `update` columns (or leave it, when `update` is empty)."""
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    if update:
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={column: statement.excluded[column] for column in update},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    if len(rows) < FEW:  # SQLAlchemy's own path caches the compiled statement
        named = [dict(zip(columns, row, strict=True)) for row in rows] if columns else rows
        connection.execute(statement, list(named))  # type: ignore[arg-type]
    else:
        execute_many(connection, statement, rows, columns=columns)
