"""Has a contact replied to a sequence since entering this run? Asked by the engine (an
`exit_on_reply` sequence ends the run) and by the recheck just before sending (the queued step
is not sent), in the same words: the goal machinery, with a goal of our own.

A reply is the `replied` event `mailer inbound` records (returns/replies.py), its properties
naming the campaign and step of the message answered, so segments, goals and step conditions
read it as any event: `event "replied" where campaign = "welcome" within 7d`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, FromClause

from mailer.campaigns.goals import reached_goal
from mailer.config import Settings

REPLIED = "replied"  # the event's name
EXITED_REPLIED = "replied"  # the reason of an enrollment ended by a reply


def reply_goal(campaign_name: str) -> str:
    """A reply to any message of `campaign_name` (settings names need no escaping)."""
    return f'event "{REPLIED}" where campaign = "{campaign_name}"'


def replied(connection: Connection, settings: Settings, campaign_name: str,
            enrollment_ids: Iterable[int], now: datetime,
            runs: FromClause | None = None) -> set[int]:  # fmt: skip
    """The enrollments among `enrollment_ids` whose contact replied to this campaign since
    entering this run (a reply to an earlier run does not end the next one); `runs` as in
    reached_goal."""
    return reached_goal(connection, settings, reply_goal(campaign_name), enrollment_ids, now,
                        runs)  # fmt: skip
