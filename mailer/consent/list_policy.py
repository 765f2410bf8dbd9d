"""A list's opt-in policy over time, in the ledger.

A grant on a double opt-in list is only `pending` until the person confirms it; on a single
opt-in list it sends at once. When settings switch a list's `double_opt_in`, the people already
on it keep their status (a single opt-in grant stays sendable, a pending one stays pending), and
only grants made after the switch follow the new policy. `mailer consent verify` replays every
grant, so it must know the policy each grant was made under: the switch is appended to the
ledger (action `double_opt_in` or `single_opt_in`, purpose the list, source `admin`), chained
like any entry, the first time a mailer command opens the database with the new settings.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, select

from mailer.consent import ledger
from mailer.consent.ledger import NewEntry
from mailer.consent.records import lock_ledger
from mailer.consent.state import Action
from mailer.store.tables import consent_entries, lists

# An entry about a list itself has no person: this stands where an address's keyed hash goes
# (never a hash's 64 hex digits, so no person's lookup ever finds it).
LIST_SUBJECT = "list"
POLICY_ACTIONS: dict[bool, Action] = {True: "double_opt_in", False: "single_opt_in"}


def record_switches(connection: Connection, defined: Mapping[str, bool],
                    now: datetime) -> list[int]:  # fmt: skip
    """Append an entry for each list whose `double_opt_in` in settings (`defined`) differs from
    its policy on record; the ids appended. Call before the lists table takes the new values,
    in the same transaction. Lists new to the database have nothing to switch from."""
    if not Policies(connection).switched(defined):
        return []  # the usual case: no lock taken
    # A second process opening with the same settings waits here, then finds the switch
    # recorded.
    lock_ledger(connection)
    entries = [
        NewEntry(LIST_SUBJECT, None, name, POLICY_ACTIONS[defined[name]], "admin", now)
        for name in Policies(connection).switched(defined)
    ]  # fmt: skip
    return ledger.append(connection, entries, now)


class Policies:
    """Each list's `double_opt_in` as of any ledger entry: the switches on record, and before
    the first one its opposite (a switch is only recorded as a change). A list never switched
    has the lists table's value throughout."""

    def __init__(self, connection: Connection) -> None:
        self.table: dict[str, bool] = dict(
            connection.execute(select(lists.c.name, lists.c.double_opt_in)).all()
        )
        self.switches: dict[str, tuple[list[int], list[bool]]] = {}
        for entry_id, purpose, action in _switch_entries(connection):
            ids, values = self.switches.setdefault(purpose, ([], []))
            ids.append(entry_id)
            values.append(action == POLICY_ACTIONS[True])

    def lists(self) -> list[str]:
        return list(self.table)

    def at(self, purpose: str, entry_id: int) -> bool:
        """Whether `purpose` was a double opt-in list when entry `entry_id` was appended."""
        if purpose not in self.switches:
            return self.table[purpose]
        ids, values = self.switches[purpose]
        before = bisect_right(ids, entry_id)
        return values[before - 1] if before else not values[0]

    def switched(self, defined: Mapping[str, bool]) -> list[str]:
        """The lists of the database whose policy in `defined` is not the one on record: the
        ledger's last switch, else the lists table's flag. (The table's flag is settings' copy,
        written again at every start: never trusted over the ledger.)"""
        return sorted(name for name, double in defined.items()
                      if name in self.table and self._latest(name) != double)  # fmt: skip

    def _latest(self, name: str) -> bool:
        return self.switches[name][1][-1] if name in self.switches else self.table[name]


def _switch_entries(connection: Connection) -> list[tuple[int, str, str]]:
    query = (
        select(consent_entries.c.id, consent_entries.c.purpose, consent_entries.c.action)
        .where(consent_entries.c.subject_hash == LIST_SUBJECT,
               consent_entries.c.action.in_(list(POLICY_ACTIONS.values())))
        .order_by(consent_entries.c.id)
    )  # fmt: skip
    return [cast(tuple[int, str, str], tuple(row)) for row in connection.execute(query)]
