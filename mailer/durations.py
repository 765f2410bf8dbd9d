"""Durations as marketers write them: "2 days", "36h", "1 week 2 days", "30m"."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "s": "seconds", "sec": "seconds", "second": "seconds", "seconds": "seconds",
    "m": "minutes", "min": "minutes", "minute": "minutes", "minutes": "minutes",
    "h": "hours", "hour": "hours", "hours": "hours",
    "d": "days", "day": "days", "days": "days",
    "w": "weeks", "week": "weeks", "weeks": "weeks",
}  # fmt: skip
_PART = re.compile(r"\s*(\d+)\s*([a-z]+)\s*")


def parse_duration(text: str) -> timedelta:
    """Parse `text` into a timedelta, or raise ValueError saying what is accepted."""
    source = text.strip().lower()
    total = timedelta()
    position = 0
    while position < len(source):
        match = _PART.match(source, position)
        if match is None or match.group(2) not in _UNITS:
            raise ValueError(
                f'"{text}" is not a duration (write e.g. "30m", "36h", "2 days", "1 week")'
            )
        total += timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        position = match.end()
    if not source:
        raise ValueError('an empty string is not a duration (write e.g. "0m" or "2 days")')
    return total


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of `value` that parse_duration reads back."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0m"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)
