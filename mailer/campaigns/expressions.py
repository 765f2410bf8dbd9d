"""Every expression settings hold (segments, lifecycle rules, triggers, goals, step conditions),
with its place in settings, and the conditions inside a parsed one: what `mailer check` checks,
and what the events API reads to warn of a property sent as text where settings compare it
with a number."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from mailer.campaigns.segments import (
    Both,
    Either,
    Event,
    Not,
    Segment,
    SegmentError,
    parse_segment,
)
from mailer.config import Settings


def settings_expressions(settings: Settings) -> list[tuple[str, str, tuple[str, str] | None]]:
    """(where in settings, expression, the step `previous` means) of every expression."""
    found: list[tuple[str, str, tuple[str, str] | None]] = [
        (f"segments.{name}", source, None) for name, source in settings.segments.items()
    ]
    found += [(f"lifecycle.rules.{stage}", rule, None)
              for stage, rule in settings.lifecycle.rules.items()]  # fmt: skip
    for name, campaign in settings.campaigns.items():
        for field in ("trigger", "goal"):
            if getattr(campaign, field):
                found.append((f"campaigns.{name}.{field}", getattr(campaign, field), None))
        for index, step in enumerate(campaign.steps):
            if step.condition:
                previous = (name, campaign.steps[index - 1].name) if index else None
                found.append((f"campaigns.{name}.steps[{index}].condition", step.condition,
                              previous))  # fmt: skip
    return found


def conditions_in(segment: Segment, kinds: Any) -> Iterator[Segment]:
    """The conditions of `segment` of `kinds` (a type or a union of types), however deep."""
    if isinstance(segment, kinds):
        yield segment
    elif isinstance(segment, Not):
        yield from conditions_in(segment.inner, kinds)
    elif isinstance(segment, Both | Either):
        for part in segment.parts:
            yield from conditions_in(part, kinds)


def events_in(segment: Segment) -> Iterator[Event]:
    """The `event "..."` conditions of `segment`, however deep."""
    for found in conditions_in(segment, Event):
        assert isinstance(found, Event)
        yield found


def numeric_properties(settings: Settings) -> dict[str, dict[str, str]]:
    """Event name -> property -> the first place in settings that compares it with a number
    (`event "purchased" where total > 50`): a website that sends it as text ("50") never
    matches there."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for where, source, _ in settings_expressions(settings):
        if where.endswith(".trigger"):
            continue  # a trigger names an event, without `where`
        try:
            segment = parse_segment(source)
        except SegmentError:
            continue  # `mailer check` says so
        for event in events_in(segment):
            for compare in event.where:
                if isinstance(compare.value, float):
                    found[event.name].setdefault(compare.field, where)
    return dict(found)
