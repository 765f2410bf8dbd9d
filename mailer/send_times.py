"""A broadcast's send time as marketers write it: `2026-03-20T09:00Z` (absolute, UTC when no
offset is given) or `2026-03-20T09:00 local` (that wall-clock time in each contact's zone)."""

from __future__ import annotations

from datetime import UTC, datetime

from mailer.errors import SettingsError


def parse_send_at(text: str) -> tuple[datetime, bool]:
    """(moment, local): `2026-03-20T09:00Z` is absolute; `2026-03-20T09:00 local` is that wall
    clock time in each contact's zone (returned naive). SettingsError for anything else."""
    source, local = text.strip(), text.strip().endswith(" local")
    try:
        moment = datetime.fromisoformat(source.removesuffix(" local").strip())
    except ValueError:
        raise SettingsError(f"'{text}' is not a time: write 2026-03-20T09:00Z, or "
                            "2026-03-20T09:00 local for 09:00 in each contact's time "
                            "zone") from None  # fmt: skip
    if local:
        return moment.replace(tzinfo=None), True
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment), False


def send_at_key(text: str) -> str:
    """What a broadcast run is keyed by: the send time, normalised so that `09:00Z` and
    `09:00+00:00` are one run and a corrected or a new time is another."""
    moment, local = parse_send_at(text)
    return f"{moment.isoformat()} local" if local else moment.astimezone(UTC).isoformat()
