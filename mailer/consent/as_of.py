"""Consents as the ledger held them at a past moment: what the compliance report of a period
that ended shows (`mailer audit report --until T`).

`consent_status` holds only the present, so the ledger's entries recorded before the moment
are replayed, the way recording consent builds that table: per person (the keyed hash of the
address, which an erasure keeps, so that a person erased since still counts as of before their
erasure) and list, each entry under its list's double opt-in policy of the time. An erasure
(purpose "*") ends every list of that person; a withdrawal of everything is recorded per list
as well, so its "*" entry changes nothing here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, or_, select

from mailer.consent.ledger import STREAM
from mailer.consent.list_policy import LIST_SUBJECT, Policies
from mailer.consent.person import ALL_LISTS
from mailer.consent.state import Action, Status, status_after
from mailer.store.tables import consent_entries

Held = tuple[Status, str]  # a person's status on a list, and the source of the entry behind it


def consents_at(connection: Connection, moment: datetime) -> list[dict[str, Any]]:
    """People per (list, source of the entry behind their status, status) as the ledger held
    them at `moment`, in the shape and order of audit.consents_by_list."""
    policies = Policies(connection)
    entries = connection.execute(
        select(consent_entries.c.id, consent_entries.c.subject_hash, consent_entries.c.purpose,
               consent_entries.c.action, consent_entries.c.source)
        .where(consent_entries.c.recorded_at < moment,
               consent_entries.c.subject_hash != LIST_SUBJECT,
               or_(consent_entries.c.purpose.in_(policies.lists()),
                   consent_entries.c.purpose == ALL_LISTS))
        .order_by(consent_entries.c.subject_hash, consent_entries.c.id),
        execution_options=STREAM,
    )  # fmt: skip
    counts: Counter[tuple[str, str, str]] = Counter()
    person: str | None = None
    held: dict[str, Held] = {}
    for entry in entries:
        if entry.subject_hash != person:
            _count(counts, held.items())
            person, held = entry.subject_hash, {}
        if entry.purpose == ALL_LISTS:
            if entry.action == "erased":
                held = {}
            continue
        before = held.get(entry.purpose, ("none", ""))
        after = status_after(before[0], cast(Action, entry.action),
                             policies.at(entry.purpose, entry.id))  # fmt: skip
        if after != before[0]:  # the entry that decided the status stays the one behind it
            held[entry.purpose] = (after, entry.source)
    _count(counts, held.items())
    return [{"list": purpose, "source": source, "status": status, "contacts": contacts}
            for (purpose, source, status), contacts in sorted(counts.items())]  # fmt: skip


def _count(counts: Counter[tuple[str, str, str]], held: Iterable[tuple[str, Held]]) -> None:
    """Every status an entry decided, "none" too (an expiry's): consent_status holds those."""
    for purpose, (status, source) in held:
        counts[purpose, source, status] += 1
