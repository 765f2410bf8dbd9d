"""executemany for bulk work (imports): the statement is compiled once per batch and each
column's type conversion is looked up once, instead of SQLAlchemy's per-row machinery, which
costs more than SQLite itself when a batch holds thousands of rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Dialect,
    Insert,
    Select,
    Text,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import ClauseElement, ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler


def execute_many(
    connection: Connection,
    statement: ClauseElement,
    rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
    ready: Collection[str] = (),
    columns: Sequence[str] | None = None,
) -> None:
    """Execute `statement` once per row. Rows are mappings with the keys of the first, or,
    with `columns`, tuples of values in that order (cheaper to build). Values of the `ready`
    columns are already in the driver's form (e.g. JSON text) and pass untouched."""
    if not rows:
        return
    dialect = connection.dialect
    keys = list(columns) if columns is not None else list(cast(Mapping[str, Any], rows[0]))
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=keys))
    converters: dict[str, Callable[[Any], Any] | None] = {
        name: None
        if name in ready
        else _remembering(bind.type.dialect_impl(dialect).bind_processor(dialect))
        for name, bind in compiled.binds.items()
    }
    names = list(compiled.positiontup or []) if compiled.positional else list(converters)
    # Column by column: one pass of C-level map() per column beats a Python loop per value.
    position = {name: index for index, name in enumerate(keys)} if columns is not None else None
    values_by_column = []
    for name in names:
        values = list(map(itemgetter(position[name] if position else name), rows))
        convert = converters[name]
        values_by_column.append(list(map(convert, values)) if convert else values)
    records = list(zip(*values_by_column, strict=True))
    if compiled.positional:
        connection.exec_driver_sql(compiled.string, records)
    else:
        connection.exec_driver_sql(
            compiled.string, [dict(zip(names, r, strict=True)) for r in records]
        )


class Many:
    """A statement compiled once for one database and executed with a few rows of values at a
    time (executemany), each value converted as its bind's type converts it: for a statement
    run again and again, where SQLAlchemy's work per execute (its parameters built row by row,
    the compiled cache's key) costs more than the rows."""

    def __init__(self, dialect: Dialect, statement: ClauseElement, keys: Sequence[str]) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=list(keys)))
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        self.sql = compiled.string
        self.positional = compiled.positional
        self.names = list(compiled.positiontup or []) if self.positional else list(binds)
        # Binds no row gives (the statement's own literals) keep their value.
        self.fixed = {name: bind.effective_value for name, bind in binds.items()
                      if name not in keys}  # fmt: skip
        converters = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                      for name, bind in binds.items()}  # fmt: skip
        self.steps = [(name, converters[name]) for name in self.names]

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Execute once per row of `rows` (mappings with the keys given when compiled); the
        rows it matched, in all."""
        return connection.exec_driver_sql(self.sql, self.records(rows)).rowcount or 0

    def records(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """`rows` as the driver takes them: converted, in the compiled statement's order."""
        records: list[Any] = []
        for row in rows:
            given = {**self.fixed, **row}
            values = [given[name] if convert is None else convert(given[name])
                      for name, convert in self.steps]  # fmt: skip
            records.append(tuple(values) if self.positional
                           else dict(zip(self.names, values, strict=True)))  # fmt: skip
        return records


def _remembering(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A converter that converts each distinct value once: a batch stamps thousands of rows
    with the same time, and formatting a datetime costs more than inserting it."""
    if convert is None:
        return None
    seen: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            seen[value] = result = convert(value)
            return result
        except TypeError:  # unhashable, e.g. a JSON attribute dict
            return convert(value)

    return remembered


def one_of(
    connection: Connection, column: ColumnElement[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """`column IN (values)` with a single bound parameter: a JSON array read by json_each on
    SQLite, an array with = ANY on PostgreSQL. SQLAlchemy renders thousands of separate
    parameters more slowly than the database answers the query."""
    listed = list(values)
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam(None, listed, type_=ARRAY(column.type)))
    each: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(json.dumps(listed))
    )
    return column.in_(each.scalar_subquery())


def one_of_given(dialect: str, column: ColumnElement[Any], key: str) -> ColumnElement[bool]:
    """`one_of` for a statement built once and executed many times: the values are its
    parameter `key`, given at each execute as `listed(dialect, values)`. Building a statement
    costs more CPU than the database spends answering it for a chunk of 40 rows."""
    if dialect == "postgresql":
        return column == any_(bindparam(key, type_=ARRAY(column.type)))
    each: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam(key, type_=Text))
    )
    return column.in_(each.scalar_subquery())


def listed(dialect: str, values: Iterable[Any]) -> Any:
    """The values of a `one_of_given` parameter: an array on PostgreSQL, JSON text on SQLite."""
    return list(values) if dialect == "postgresql" else json.dumps(list(values))


def inserted(connection: Connection, statement: Insert) -> int:
    """Execute an INSERT ... SELECT and say how many rows it wrote. psycopg gives SQLAlchemy's
    INSERT ... SELECT a rowcount of -1, so on PostgreSQL the rows are counted in the database
    (a RETURNING in a CTE): the ids never pass through Python."""
    if connection.dialect.name != "postgresql":
        return int(connection.execute(statement).rowcount or 0)
    written = statement.returning(literal_column("1")).cte("written")
    return int(connection.scalar(select(func.count()).select_from(written)) or 0)
