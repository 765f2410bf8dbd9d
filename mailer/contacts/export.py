"""`mailer contacts export`: contacts as CSV that re-imports as it left, with every cell that a
spreadsheet would run as a formula neutralised, and every cell holding the tag separator `;`
quoted."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TextIO

from sqlalchemy import Connection, Select, select

from mailer.contacts.csvfile import spreadsheet_line
from mailer.store.tables import contact_tags, contacts, lists, memberships

FIELDS = ("email", "first_name", "last_name", "timezone", "locale")


def export_contacts(connection: Connection, out: TextIO, list_name: str | None = None) -> int:
    """Write the contacts (of one list, or all) to `out`; return how many. Streams twice: once
    for the attribute names (the columns), once for the rows."""
    query: Select[Any] = select(contacts).order_by(contacts.c.id)
    if list_name is not None:
        query = query.join(memberships, memberships.c.contact_id == contacts.c.id).join(
            lists, (lists.c.id == memberships.c.list_id) & (lists.c.name == list_name)
        )
    streamed = connection.execution_options(yield_per=2000)
    names: dict[str, None] = {}
    for row in streamed.execute(query.with_only_columns(contacts.c.attributes)):
        names.update(dict.fromkeys(row.attributes or {}))
    attributes = sorted(names)
    out.write(spreadsheet_line([*FIELDS, "tags", *attributes]))
    count = 0
    for partition in streamed.execute(query).partitions():
        tags = _tags(connection, [row.id for row in partition])
        for row in partition:
            values = [row._mapping[name] for name in FIELDS]
            values.append(";".join(sorted(tags[row.id])))
            values += [_cell(row.attributes.get(name)) for name in attributes]
            out.write(spreadsheet_line([value or "" for value in values]))
            count += 1
    return count


def _tags(connection: Connection, contact_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for row in connection.execute(
        select(contact_tags).where(contact_tags.c.contact_id.in_(contact_ids))
    ):
        found[row.contact_id].append(row.tag)
    return found


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
