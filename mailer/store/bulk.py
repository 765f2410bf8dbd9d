"""executemany for bulk work (imports): the statement is compiled once per batch and each
column's type conversion is looked up once, instead of SQLAlchemy's per-row machinery, which
costs more than SQLite itself when a batch holds thousands of rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


def execute_many(
    connection: Connection, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Execute `statement` once per row; every row has the keys of the first."""
    if not rows:
        return
    dialect = connection.dialect
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=list(rows[0])))
    converters: dict[str, Callable[[Any], Any] | None] = {
        name: bind.type.dialect_impl(dialect).bind_processor(dialect)
        for name, bind in compiled.binds.items()
    }
    names = list(compiled.positiontup or converters) if compiled.positional else list(converters)
    plan = [(name, converters[name]) for name in names]
    if compiled.positional:
        positional = [
            tuple(convert(row[name]) if convert else row[name] for name, convert in plan)
            for row in rows
        ]
        connection.exec_driver_sql(compiled.string, positional)
    else:
        named = [
            {name: convert(row[name]) if convert else row[name] for name, convert in plan}
            for row in rows
        ]
        connection.exec_driver_sql(compiled.string, named)
