"""Pure decisions about time and chance: is now inside a send window (in the contact's own
time zone), when a date-triggered message's day opens and closes, and which A/B variant a
contact gets. Plain functions, tested without I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from mailer.config import Settings, Step, parse_quiet_hours

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
        end = _end_of_window(int(match.group(3)), int(match.group(4)))
    except ValueError:
        raise ValueError(f'"{text}": hours are 00:00 to 23:59 ({hint})') from None
    if end <= start:
        raise ValueError(f'"{text}": the window must end after it starts ({hint})')
    return SendWindow(start, end, _days(match.group("days").lower(), text))


def _end_of_window(hour: int, minute: int) -> time:
    """`24:00` closes a window at midnight (quiet hours "00:00-06:00" leave "06:00-24:00")."""
    return time.max if (hour, minute) == (24, 0) else time(hour, minute)


def overlap(first: SendWindow, second: SendWindow) -> bool:
    """Whether some moment is inside both windows (in the same zone); when none is, a message
    that must wait for both waits forever."""
    shared_days = first.days & second.days
    return bool(shared_days) and max(first.start, second.start) < min(first.end, second.end)


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


def send_windows(settings: Settings, step: Step) -> list[tuple[str, str]]:
    """The send windows a step must be inside, each with the reason of a wait for it: its own,
    and the hours outside quiet hours."""
    windows = [(step.send_window, f"outside {step.send_window}")] if step.send_window else []
    quiet = settings.engine.quiet_hours
    if quiet:
        windows.append((parse_quiet_hours(quiet), f"quiet hours {quiet}"))
    return windows


def inside_all(windows: list[SendWindow], now: datetime, zone: str) -> datetime:
    """The first moment from `now` inside every window at once in `zone` (UTC). Windows that
    never meet (which `mailer check` refuses) raise ValueError."""
    moment = now
    for _ in range(16):  # each round moves to a later opening; overlapping windows meet in a week
        later = max((next_opening(window, moment, zone) for window in windows), default=moment)
        if later == moment:
            return moment
        moment = later
    raise ValueError("the send windows never overlap")


# How long after its wall-clock time a date-triggered message may still go (09:00 -> 21:00),
# and never after its day ends: "happy birthday" at 22:58 reads as a mistake.
DAY_WINDOW = timedelta(hours=12)


@dataclass(frozen=True)
class DayWindow:
    day: date  # the contact's local date the message is for
    opens: datetime  # UTC: the wall-clock time on that day
    closes: datetime  # UTC: DAY_WINDOW later on the clock, or the day's end if sooner


def day_window(step: Step, midnight: datetime, zone: str) -> DayWindow:
    """The window of a date-triggered first step for the day that began at `midnight` (UTC) in
    `zone`. `at` is the time of day (and `delay` whole days after the date); without `at`,
    `delay` is read on the clock from midnight: "9h" is 09:00, "1 day 9h" 09:00 the day after."""
    day = midnight.astimezone(ZoneInfo(zone)).date() + timedelta(days=step.delay.days)
    time_of_day = step.at or (datetime.min + timedelta(seconds=step.delay.seconds)).time()
    start = datetime.combine(day, time_of_day)
    end = min(start + DAY_WINDOW, datetime.combine(day + timedelta(days=1), time()))
    return DayWindow(day, _utc(start, zone), _utc(end, zone))


def _utc(wall_clock: datetime, zone: str) -> datetime:
    """A local wall-clock time in UTC. A time the clocks skip (01:30 on spring-forward day in
    London) is read with the offset before the change (02:30 BST); a repeated one, the first."""
    return wall_clock.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


PRIME = 2**31 - 1  # products of two numbers below it stay below 2**62: safe in 64-bit SQL
POINTS = 10_000  # a contact's place on the split, in hundredths of a percent
ROUNDS = 3


class Arithmetic(Protocol):
    """An integer, or an SQL expression of one: the variant hash is written once for both."""

    def __add__(self, other: Any, /) -> Any: ...
    def __mul__(self, other: Any, /) -> Any: ...
    def __mod__(self, other: Any, /) -> Any: ...
    def __floordiv__(self, other: Any, /) -> Any: ...


N = TypeVar("N", bound=Arithmetic)


@dataclass(frozen=True)
class VariantKey:
    """The secret-free key of one (campaign, step) split: numbers taken from sha256 of the names,
    so two tests (or two steps) split the contacts independently of each other."""

    offset: int
    rounds: tuple[tuple[int, int], ...]  # (multiplier, addend) per round, all below PRIME


@cache  # a tick picks for thousands of contacts of one step
def variant_key(campaign: str, step: str) -> VariantKey:
    digest = hashlib.sha256(f"{campaign}\x1f{step}".encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "big") for i in range(0, 4 * (1 + 2 * ROUNDS), 4)]
    rounds = tuple((words[1 + 2 * i] % (PRIME - 1) + 1, words[2 + 2 * i] % PRIME)
                   for i in range(ROUNDS))  # fmt: skip
    return VariantKey(words[0] % PRIME, rounds)


def variant_point(contact_id: N, key: VariantKey) -> N:
    """Where a contact falls in [0, POINTS): the contact id mixed with the key (multiply, add and
    square modulo a prime, then rotate the 31 bits; three rounds), in integer arithmetic that
    SQLite and PostgreSQL compute exactly as Python does (broadcasts assign variants in SQL)."""
    value: N = (contact_id % PRIME + key.offset) % PRIME
    for multiplier, addend in key.rounds:
        value = (value * multiplier + addend) % PRIME
        value = value * value % PRIME  # the non-linear part: neighbours land far apart
        value = value % 2**16 * 2**15 + value // 2**16  # rotate: high bits meet the low ones
    result: N = value % POINTS
    return result


def variant_bounds(weights: Mapping[str, int]) -> list[tuple[str, int]]:
    """Each variant with the upper end of its share of [0, POINTS), in weight order:
    a contact gets the first variant with point * total < upper (exact in SQL too)."""
    upper, bounds = 0, []
    for name, weight in weights.items():
        upper += weight
        bounds.append((name, upper * POINTS))
    return bounds


def pick_variant(contact_id: int, campaign: str, step: str, weights: Mapping[str, int]) -> str:
    """The variant a contact gets: a deterministic function of contact and step, spread by
    weight, so a retry, a restart or `mailer plan` always picks the same one."""
    return variant_picker(campaign, step, weights)(contact_id)


def variant_picker(campaign: str, step: str, weights: Mapping[str, int]) -> Callable[[int], str]:
    """pick_variant for one step, its key and bounds worked out once (the engine picks for
    thousands of contacts of a step at once)."""
    total = sum(weights.values())
    if total <= 0:
        first = next(iter(weights))
        return lambda contact_id: first
    key, bounds = variant_key(campaign, step), variant_bounds(weights)

    def pick(contact_id: int) -> str:
        point = variant_point(contact_id, key) * total
        for name, upper in bounds:
            if point < upper:
                return name
        raise AssertionError("unreachable: point < POINTS")

    return pick
