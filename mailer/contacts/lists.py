"""Lists are defined in settings; the database keeps a row per list for memberships to point at."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Connection, select

from mailer.consent.list_policy import record_switches
from mailer.store.tables import lists
from mailer.store.upsert import upsert


def sync_lists(connection: Connection, defined: Mapping[str, tuple[str, bool]],
               now: datetime) -> dict[str, int]:  # fmt: skip
    """Create or update a row for each list (name -> (title, double opt-in)); return name -> id.

    A list removed from settings keeps its row, memberships and consent history. A list whose
    double opt-in changed has the switch appended to the consent ledger first (list_policy.py).
    """
    record_switches(connection, {name: double for name, (_, double) in defined.items()}, now)
    upsert(
        connection,
        lists,
        [{"name": name, "title": title, "double_opt_in": doi}
         for name, (title, doi) in defined.items()],
        keys=("name",),
        update=("title", "double_opt_in"),
    )  # fmt: skip
    return {row.name: row.id for row in connection.execute(select(lists.c.name, lists.c.id))}
