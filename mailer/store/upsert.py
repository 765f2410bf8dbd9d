"""INSERT ... ON CONFLICT DO UPDATE / DO NOTHING, the same call on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import psycopg
from sqlalchemy import BigInteger, Boolean, Connection, Integer, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeEngine

from mailer.store.bulk import _remembering, execute_many
from mailer.store.tables import UTCDateTime

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
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    untaken: bool = False,
) -> None:
    """Insert the `rows` (mappings with the keys of the first) whose `keys` are not taken yet,
    in their order (ids from the table's sequence come out in it). On PostgreSQL many rows are
    copied (binary COPY) into a temporary table of the transaction, then moved by one
    INSERT ... SELECT ... ON CONFLICT DO NOTHING: an executemany is a round trip per row, and
    the JSON document this replaced cost more to encode in Python and to parse in the server
    (issue 16: 0.7 s of mailer's CPU and 0.5 s of the server's for 50,000 enrollments and their
    outbox rows).

    `untaken`: the caller knows no row's keys are taken (new enrollments under the enroller
    lock), so the rows go straight into the table, written once (the staging table and ON
    CONFLICT cost the server ~7 µs a row); a key taken after all raises IntegrityError."""
    if untaken:
        _insert_untaken(connection, table, rows)
        return
    if connection.dialect.name != "postgresql" or len(rows) < FEW:
        upsert(connection, table, rows, keys)
        return
    staged = _staging(connection, table)
    columns = _copy(connection, table, staged, rows, ordinal=True)
    # Through SQLAlchemy, where statement hooks (bench/tick_bench.py --profile) see them.
    connection.exec_driver_sql(
        f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {staged} "
        f'ORDER BY "{ORDINAL}" ON CONFLICT ({", ".join(keys)}) DO NOTHING'
    )
    connection.exec_driver_sql(f"TRUNCATE {staged}")


# The order of the rows in the staging table, which INSERT ... SELECT follows.
ORDINAL = "insert_new_ordinal"


def _insert_untaken(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """A plain INSERT of `rows`: a binary COPY into `table` itself on PostgreSQL."""
    if connection.dialect.name != "postgresql" or len(rows) < FEW:
        execute_many(connection, table.insert(), rows)
        return
    try:
        _copy(connection, table, table.name, rows, ordinal=False)
    except psycopg.errors.IntegrityError as error:  # as SQLAlchemy's own statements raise it
        raise IntegrityError(f"COPY {table.name}", None, error) from error


def _copy(connection: Connection, table: Table, target: str, rows: Sequence[dict[str, Any]],
          ordinal: bool) -> str:  # fmt: skip
    """Binary COPY of `rows` into `target` (with their ORDINAL, for a staging table); the
    quoted column names."""
    names = list(rows[0])
    converters = [_remembering(_bind(table.c[name].type, connection)) for name in names]
    values = [list(map(convert, map(itemgetter(name), rows))) if convert
              else list(map(itemgetter(name), rows))
              for name, convert in zip(names, converters, strict=True)]  # fmt: skip
    types = [_copy_type(table.c[name].type) for name in names]
    columns = ", ".join(f'"{name}"' for name in names)
    if ordinal:
        values.append(list(range(len(rows))))
        types.append("int4")
    copied = f', "{ORDINAL}"' if ordinal else ""
    copying = f"COPY {target} ({columns}{copied}) FROM STDIN (FORMAT BINARY)"
    raw = connection.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(copying) as copy:  # type: ignore[union-attr]
        copy.set_types(types)
        for row in zip(*values, strict=True):
            copy.write_row(row)
    return columns


def _staging(connection: Connection, table: Table) -> str:
    """The temporary table that rows for `table` are copied into: its columns (no
    constraints, no defaults) and the ordinal, created once per transaction (dropped at the
    end; a rolled-back savepoint takes it along, and the next call creates it again)."""
    staged = f"pg_temp.insert_new_{table.name}"
    exists = connection.exec_driver_sql("SELECT to_regclass(%(name)s)", {"name": staged}).scalar()
    if exists is None:
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {staged.removeprefix('pg_temp.')} ON COMMIT DROP AS "
            f'SELECT *, 0 AS "{ORDINAL}" FROM {table.name} WITH NO DATA'
        )
    return staged


def _bind(kind: TypeEngine[Any], connection: Connection) -> Callable[[Any], Any] | None:
    """The column type's own conversion of a Python value (UTCDateTime refuses naive times)."""
    dialect = connection.dialect
    return kind.dialect_impl(dialect).bind_processor(dialect)


def _copy_type(kind: TypeEngine[Any]) -> str:
    """The PostgreSQL type a binary COPY sends a value of this column as."""
    for sql_type, name in _COPY_TYPES:
        if isinstance(kind, sql_type):
            return name
    raise TypeError(f"insert_new: no binary COPY type for a {kind!r} column")


_COPY_TYPES: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (UTCDateTime, "timestamptz"), (BigInteger, "int8"), (Integer, "int4"), (Boolean, "bool"),
    (String, "text"),  # Text and VARCHAR(n) both: text's binary form is varchar's
)  # fmt: skip
