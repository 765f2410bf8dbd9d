"""Date-triggered messages (birthdays, anniversaries) keep to the contact's own day: the first
step goes at a wall-clock time on that day ("09:00" is 09:00 on daylight-saving days too), and
a message that cannot go within its day's window is skipped, not sent that night or the next
morning. Plain functions over settings and times; the engine asks `past_its_day`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from mailer.campaigns.enrollment import parse_trigger
from mailer.campaigns.timing import day_window, next_opening, parse_window
from mailer.config import Campaign
from mailer.errors import SettingsError


def date_triggered(campaign: Campaign) -> str | None:
    """The date attribute a sequence is triggered by (`date "birthday"`), or None."""
    try:
        kind, subject = parse_trigger(campaign.trigger or "")
    except SettingsError:  # no trigger, or a broken one: `mailer check` reports that
        return None
    return subject if kind == "date" else None


def past_its_day(campaign: Campaign, position: int, entered_at: datetime, zone: str,
                 windows: Sequence[str], now: datetime) -> str | None:  # fmt: skip
    """Why a due step must be skipped: the first step of a date-triggered sequence whose next
    allowed moment (now, or when all its send `windows` are open at once) is past its day's
    window; None for any other step, or while the message may still go."""
    attribute = date_triggered(campaign) if position == 0 else None
    if attribute is None:
        return None
    window = day_window(campaign.steps[0], entered_at, zone)
    moment, parsed = now, [parse_window(text) for text in windows]
    moved = True
    while moved and moment < window.closes:  # each move is to a later opening: it ends
        moved = False
        for send_window in parsed:
            opening = next_opening(send_window, moment, zone)
            if opening > moment:
                moment, moved = opening, True
    if moment < window.closes:
        return None
    return f"past its day ({attribute} {window.day.isoformat()}, {zone})"


def never_in_its_day(campaign: Campaign, windows: Sequence[str]) -> bool:
    """Whether the first step of a date-triggered sequence would be skipped on every weekday:
    its day's window never meets its send `windows` (`mailer check` reports it)."""
    monday = datetime(2024, 1, 1, tzinfo=UTC)  # UTC: no daylight saving to blur the hours
    for offset in range(7):
        midnight = monday + timedelta(days=offset)
        opens = day_window(campaign.steps[0], midnight, "UTC").opens
        if past_its_day(campaign, 0, midnight, "UTC", windows, opens) is None:
            return False
    return date_triggered(campaign) is not None
