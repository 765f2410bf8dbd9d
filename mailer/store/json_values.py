"""Reading one value of a JSON column as a number, a text or a boolean, in SQL: NULL when the
stored value is of another JSON type (or missing), never a cast error.

`CAST(properties ->> 'value' AS FLOAT)` fails the whole statement on PostgreSQL for a value
"high", and on SQLite quietly reads it as 0.0. Here the JSON type is checked first, inside a
CASE (the only place PostgreSQL promises to evaluate a test before the cast), so a value of
the wrong type compares like a missing one: false.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Numeric, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class _JsonValue(FunctionElement[Any]):
    """`column[key]` read as one JSON type; subclasses name the type."""

    inherit_cache = True
    sqlite_types: tuple[str, ...] = ()  # what SQLite's json_type() says for it
    postgresql_type = ""  # what PostgreSQL's jsonb_typeof() says for it
    postgresql_read = ""  # how to read the text of `->>` as that type: %s is the text

    def __init__(self, item: ColumnElement[Any]) -> None:
        super().__init__(item)


class JsonNumber(_JsonValue):
    inherit_cache = True
    # NUMERIC, not FLOAT: a JSON number of 400 digits is valid and must not overflow.
    type = Numeric()
    name = "json_number"
    sqlite_types = ("integer", "real")
    postgresql_type = "number"
    postgresql_read = "CAST(%s AS NUMERIC)"


class JsonText(_JsonValue):
    inherit_cache = True
    type = Text()
    name = "json_text"
    sqlite_types = ("text",)
    postgresql_type = "string"
    # Ordered by code point, as SQLite and Python order text, whatever the server's locale.
    postgresql_read = '(%s) COLLATE "C"'


class JsonBoolean(_JsonValue):
    inherit_cache = True
    type = Boolean()
    name = "json_boolean"
    sqlite_types = ("true", "false")
    postgresql_type = "boolean"
    postgresql_read = "CAST(%s AS BOOLEAN)"


def number_value(value: float | int) -> Decimal:
    """A number to compare with a JsonNumber: exact as written (repr is the shortest form that
    reads back the same float), and NUMERIC on PostgreSQL, where a float parameter would make
    it compare in double precision and overflow on big values."""
    return Decimal(repr(value))


def _item(element: _JsonValue) -> Any:
    (item,) = element.clauses.clauses
    return item


@compiles(_JsonValue, "sqlite")
def _sqlite(element: _JsonValue, compiler: SQLCompiler, **kw: Any) -> str:
    item = _item(element)  # column[key]: JSON_EXTRACT(column, '$."key"') on SQLite
    column, path = compiler.process(item.left, **kw), compiler.process(item.right, **kw)
    types = ", ".join(f"'{name}'" for name in element.sqlite_types)
    return (f"CASE WHEN json_type({column}, {path}) IN ({types}) "
            f"THEN json_extract({column}, {path}) END")  # fmt: skip


@compiles(_JsonValue, "postgresql")
def _postgresql(element: _JsonValue, compiler: SQLCompiler, **kw: Any) -> str:
    item = _item(element)
    column, key = compiler.process(item.left, **kw), compiler.process(item.right, **kw)
    read = element.postgresql_read % f"{column} ->> {key}"
    return (
        f"CASE WHEN jsonb_typeof({column} -> {key}) = '{element.postgresql_type}' THEN {read} END"
    )
