"""What the engine writes for a batch of due enrollments, gathered while it decides and then
written in a few statements: the outbox rows in one executemany (compiled once), and the
enrollment changes one UPDATE per distinct set of values (a step queued for 5,000 contacts at
once is one `UPDATE ... WHERE id IN (...)`), the rest (values of their own, such as a rhythm's
due time) in one executemany per set of columns. Two statements per due row cost more than the
engine's decisions by an order of magnitude."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, update
from sqlalchemy.sql import ColumnElement

from mailer.campaigns.goals import convert, converted
from mailer.config import Settings
from mailer.store.bulk import execute_many, one_of
from mailer.store.tables import enrollments, outbox
from mailer.store.upsert import insert_new

# A postponed step keeps when it was first due (the frequency cap's queue order): the row's own
# waiting_since, or else the due_at it had until this UPDATE (SQL reads the old row on the right).
FIRST_DUE: ColumnElement[Any] = func.coalesce(enrollments.c.waiting_since, enrollments.c.due_at)
MESSAGE_KEYS = ("campaign", "step", "contact_id", "cycle")
# The columns of an enrollment row that a new row's dict may leave out (None).
UNSET = ("last_step", "last_step_at", "waiting_since", "ended_at", "reason")


@dataclass
class DueWrites:
    """The writes decided for due enrollments, not yet made."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[int, dict[str, Any]] = field(default_factory=dict)  # enrollment id -> SET
    goals: dict[int, str] = field(default_factory=dict)  # enrollment id -> the goal reached

    def message(self, name: str, step: str, row: Any, status: str, variant: str | None,
                reason: str | None, entry_id: int | None, now: datetime) -> None:  # fmt: skip
        """An outbox row for the enrollment `row`'s `step` (kept if it exists already)."""
        self.messages.append({
            "campaign": name, "step": step, "contact_id": row.contact_id, "cycle": row.cycle,
            "enrollment_id": row.id, "variant": variant, "status": status, "reason": reason,
            "consent_entry_id": entry_id, "queued_at": now,
            "send_after": now if status == "queued" else None,
        })  # fmt: skip

    def change(self, enrollment_id: int, **values: Any) -> None:
        self.changes.setdefault(enrollment_id, {}).update(values)

    def end(self, enrollment_id: int, status: str, now: datetime, reason: str | None) -> None:
        self.change(enrollment_id, status=status, ended_at=now, due_at=None, reason=reason)

    def postpone(self, enrollment_id: int, until: datetime, reason: str) -> None:
        """Due again at `until`; waiting_since keeps when the step was first due."""
        self.change(enrollment_id, due_at=until, reason=reason, waiting_since=FIRST_DUE)

    def write(self, connection: Connection, settings: Settings, now: datetime) -> None:
        """Make the writes, in a few statements, and forget them."""
        if self.goals:
            convert(connection, settings, self.goals, now)
        insert_new(connection, outbox, self.messages, keys=MESSAGE_KEYS)
        _change(connection, self.changes)
        self.messages, self.changes, self.goals = [], {}, {}


def _change(connection: Connection, changes: dict[int, dict[str, Any]]) -> None:
    """One UPDATE per distinct set of values for the ids that share it; the ids with values of
    their own in one executemany per set of columns."""
    Shape = tuple[tuple[str, Hashable], ...]
    alike: dict[Shape, list[int]] = defaultdict(list)
    for enrollment_id, values in changes.items():
        alike[tuple(sorted(values.items(), key=lambda item: item[0]))].append(enrollment_id)
    own: dict[Shape, list[dict[str, Any]]] = defaultdict(list)
    for shared, ids in alike.items():
        if len(ids) > 1:
            connection.execute(update(enrollments).where(one_of(connection, enrollments.c.id, ids))
                               .values(dict(shared)))  # fmt: skip
            continue
        # SQL expressions (FIRST_DUE) belong to the statement; plain values become parameters.
        shape = tuple((name, value if isinstance(value, ColumnElement) else None)
                      for name, value in shared)  # fmt: skip
        parameters = {name: value for name, value in shared if not isinstance(value, ColumnElement)}
        own[shape].append({"row_id": ids[0], **parameters})
    for columns, rows in own.items():
        statement = update(enrollments).where(enrollments.c.id == bindparam("row_id")).values(
            {name: bindparam(name) if expression is None else expression
             for name, expression in columns})  # fmt: skip
        execute_many(connection, statement, rows)


@dataclass
class HeldWrites(DueWrites):
    """DueWrites for enrollments not written yet (a first step decided as they enroll): the
    writes are held, then `enrollment_rows` gives each row as it is after them, to be
    inserted so, and the outbox rows follow. The rows are written once."""

    def write(self, connection: Connection, settings: Settings, now: datetime) -> None:
        """Nothing yet: the enrollments the changes are of are not in the database."""

    def enrollment_rows(self, rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
        """`rows` (new enrollment rows with their ids) with the changes and goals applied, as
        the UPDATEs of DueWrites.write would leave them: SQL expressions (FIRST_DUE) read the
        row as it was before the changes."""
        settled, unset = [], dict.fromkeys(UNSET)
        nothing: dict[str, Any] = {}
        for row in rows:
            after = {**unset, **row}
            first_due = after["waiting_since"] or after["due_at"]
            changes = self.changes.get(row["id"], nothing)
            after.update(changes)
            for name, value in changes.items():
                if isinstance(value, ColumnElement):
                    if value is not FIRST_DUE:
                        raise TypeError(f"{name}: no value before the row is written")
                    after[name] = first_due
            goal = self.goals.get(row["id"])
            if goal is not None:  # a new run has not ended: convert() would end it
                after.update(converted(goal, now))
            settled.append(after)
        return settled
