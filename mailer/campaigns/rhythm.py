"""A sequence's rhythm: a step's delay counts from the previous step's actual delivery, so no
contact gets two steps closer together than the later step's delay, even when the previous
message sat in the queue (an outage, a slow relay, deferrals).

`next_due` is the rule over plain values; `previous_messages` reads, for one batch of due
enrollments, the outbox row of each one's last step in one query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, select

from mailer.store.bulk import one_of
from mailer.store.tables import enrollments, outbox

# The outbox statuses of a message not yet delivered, nor given up on.
ON_ITS_WAY = ("queued", "sending", "deferred")
# A step whose previous message is still on its way is looked at again this often.
LOOK_AGAIN = timedelta(minutes=5)


@dataclass(frozen=True)
class Previous:
    """The message of an enrollment's last step: `at` is when the step was queued or skipped;
    `status` is None when the step has no message (a branch jumped over it)."""

    step: str
    at: datetime
    status: str | None = None
    sent_at: datetime | None = None


def next_due(previous: Previous, delay: timedelta) -> datetime | None:
    """When the next step is due: `delay` after the previous message was sent; None while it
    is still on its way. A message that failed or was skipped reached no one, so the delay
    counts from when it was queued or skipped."""
    if previous.status in ON_ITS_WAY:
        return None
    if previous.status == "sent" and previous.sent_at is not None:
        return previous.sent_at + delay
    return previous.at + delay


def previous_messages(connection: Connection, rows: Sequence[Any]) -> dict[int, Previous]:
    """The last step's message of each enrollment in `rows` that has a last step, by
    enrollment id (one query, through the outbox's unique campaign/step/contact/cycle key)."""
    started = [row for row in rows if row.last_step is not None and row.last_step_at is not None]
    if not started:
        return {}
    found = connection.execute(
        select(enrollments.c.id, outbox.c.status, outbox.c.sent_at)
        .join(outbox, and_(outbox.c.campaign == enrollments.c.campaign,
                           outbox.c.step == enrollments.c.last_step,
                           outbox.c.contact_id == enrollments.c.contact_id,
                           outbox.c.cycle == enrollments.c.cycle))
        .where(one_of(connection, enrollments.c.id, [row.id for row in started]))
    )  # fmt: skip
    messages = {row.id: (row.status, row.sent_at) for row in found}
    return {
        row.id: Previous(row.last_step, row.last_step_at, *messages.get(row.id, (None, None)))
        for row in started
    }
