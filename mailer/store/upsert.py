"""INSERT ... ON CONFLICT DO UPDATE / DO NOTHING, the same call on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, Text, cast, func, literal, select, text
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


def insert_new(
    connection: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert the `rows` (mappings with the keys of the first) whose `keys` are not taken yet.
    On PostgreSQL, many rows go as one statement, one JSON parameter read back as rows of the
    table's own type (json_populate_recordset): an executemany there is a round trip per row,
    even pipelined, and psycopg's arrays are dumped value by value in Python."""
    if connection.dialect.name != "postgresql" or len(rows) < FEW:
        upsert(connection, table, rows, keys)
        return
    names = list(rows[0])
    document = cast(literal(json.dumps(rows, default=_json_value), Text), postgresql.JSON)
    typed = func.json_populate_recordset(text(f"NULL::{table.name}"), document)
    source = typed.table_valued(*names)
    statement = postgresql.insert(table).from_select(names, select(*source.c))
    connection.execute(statement.on_conflict_do_nothing(index_elements=list(keys)))


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):  # aware (UTCDateTime refuses naive times): timestamptz reads it
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form here")
