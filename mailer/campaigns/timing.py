"""Pure decisions about time and chance: is now inside a send window (in the contact's own
time zone), and which A/B variant a contact gets. Plain functions, tested without I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*(?P<days>.*?)\s*$")
_NAMED = {"weekdays": "mon-fri", "weekends": "sat-sun", "": "mon-sun", "daily": "mon-sun"}


@dataclass(frozen=True)
class SendWindow:
    start: time
    end: time
    days: frozenset[int]  # 0 = Monday

    def contains(self, local: datetime) -> bool:
        return local.weekday() in self.days and self.start <= local.time() < self.end


def parse_window(text: str) -> SendWindow:
    """`09:00-18:00`, `09:00-18:00 weekdays`, `10:00-16:00 sat-sun`, `08:00-20:00 mon,wed,fri`."""
    match = _WINDOW.match(text)
    hint = 'write e.g. "09:00-18:00 weekdays"'
    if match is None:
        raise ValueError(f'"{text}" is not a send window ({hint})')
    try:
        start = time(int(match.group(1)), int(match.group(2)))
        end = time(int(match.group(3)), int(match.group(4)))
    except ValueError:
        raise ValueError(f'"{text}": hours are 00:00 to 23:59 ({hint})') from None
    if end <= start:
        raise ValueError(f'"{text}": the window must end after it starts ({hint})')
    return SendWindow(start, end, _days(match.group("days").lower(), text))


def _days(spec: str, text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in _NAMED.get(spec, spec).split(","):
        first, _, last = part.strip().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f'"{text}": days are weekdays, weekends, or e.g. mon-fri, sat')
        low, high = DAYS.index(first), DAYS.index(last or first)
        days.update(range(low, high + 1) if low <= high else [*range(low, 7), *range(high + 1)])
    return frozenset(days)


def next_opening(window: SendWindow, now: datetime, zone: str) -> datetime:
    """`now` when it is inside the window in `zone`, else when the window next opens (UTC)."""
    local = now.astimezone(ZoneInfo(zone))
    if window.contains(local):
        return now
    for offset in range(8):
        day: date = local.date() + timedelta(days=offset)
        opening = datetime.combine(day, window.start, tzinfo=ZoneInfo(zone))
        if day.weekday() in window.days and opening > local:
            return opening.astimezone(UTC)
    raise ValueError("a send window with no days")  # parse_window never makes one


MULTIPLIER = 2654435761  # Knuth's multiplicative hash: 2**32 / golden ratio


def variant_salt(campaign: str, step: str) -> int:
    """A number per step, so each step splits the contacts differently."""
    return int.from_bytes(hashlib.sha256(f"{campaign}\x1f{step}".encode()).digest()[:2], "big")


def variant_point(contact_id: int, salt: int, total: int) -> int:
    """Where a contact falls in [0, total): integer arithmetic that SQL can do the same way
    (broadcasts assign variants in the database), using the hash's high bits."""
    return ((contact_id * MULTIPLIER + salt) % 2**32) // 2**16 % total


def pick_variant(contact_id: int, campaign: str, step: str, weights: Mapping[str, int]) -> str:
    """The variant a contact gets: a deterministic function of contact and step, spread by
    weight, so a retry, a restart or `mailer plan` always picks the same one."""
    total = sum(weights.values())
    if total <= 0:
        return next(iter(weights))
    point = variant_point(contact_id, variant_salt(campaign, step), total)
    for name, weight in weights.items():
        if point < weight:
            return name
        point -= weight
    raise AssertionError("unreachable: point < total")
