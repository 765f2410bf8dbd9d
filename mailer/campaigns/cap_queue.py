"""Who goes first under the frequency cap. When a contact's due messages are more than the
slots the cap leaves, time-critical steps (priority "high") go first, then the message that
has waited longest (the time it was first due, kept while it is postponed), then the older
enrollment: a postponed step never keeps losing to one that merely comes first in settings
or in the tick."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

PRIORITY_ORDER = {"high": 0, "normal": 1, "low": 2}
# Outbox rows that count toward the frequency cap: sent, or on their way.
ON_THE_WAY = ("queued", "sending", "deferred", "sent")
# How the reason of an enrollment postponed for want of a slot starts (resends read it: they
# yield to a step waiting for room).
CAPPED = "frequency cap"


@dataclass(frozen=True)
class Waiting:
    """A due step waiting for a slot: its enrollment, contact, priority and first due time."""

    enrollment_id: int
    contact_id: int
    priority: str
    since: datetime


def first_in_line(waiting: Iterable[Waiting], free: Mapping[int, int], limit: int) -> set[int]:
    """The enrollments whose message takes one of its contact's free slots: `free` by contact,
    `limit` for a contact not in it (nothing sent in the window)."""
    by_contact: dict[int, list[Waiting]] = defaultdict(list)
    for step in waiting:
        by_contact[step.contact_id].append(step)
    served: set[int] = set()
    for contact, steps in by_contact.items():
        steps.sort(key=lambda s: (PRIORITY_ORDER[s.priority], s.since, s.enrollment_id))
        served.update(step.enrollment_id for step in steps[: max(0, free.get(contact, limit))])
    return served
