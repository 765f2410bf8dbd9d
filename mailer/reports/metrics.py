"""`mailer report`: how each campaign did, per step and per variant, as one JSON-ready dict (the
shape `--json` prints, the HTML report draws and the CSV flattens).

Counts come from reports/counts.py; here they become rates (each with its numerator and
denominator, null rather than a division by zero), flags beside rates outside the usual
ranges ([reports]), A/B verdicts, a sequence's funnel and a timeline.
"""

from __future__ import annotations

import importlib
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from mailer.config import Campaign, Reports, Settings, resent_name
from mailer.consent.audit import Period
from mailer.errors import MailerError
from mailer.reports.counts import BASE_VARIANT, COUNTS, Counted, Scope, count_everything
from mailer.reports.decisions import decisions
from mailer.store.tables import outbox

# rate -> (numerator, denominator, the [reports] bound, the side of it that is flagged)
RATES: dict[str, tuple[str, str, str | None, str | None]] = {
    "delivery": ("delivered", "sent", "delivery_min", "low"),
    "open": ("unique_opens", "delivered", "open_min", "low"),
    "click_through": ("unique_clicks", "delivered", "click_min", "low"),
    "click_to_open": ("unique_clicks", "unique_opens", None, None),
    "unsubscribe": ("unsubscribes", "delivered", None, None),
    "complaint": ("complaints", "delivered", "complaint_max", "high"),
    "bounce": ("bounced", "sent", "bounce_max", "high"),
}
AB_METRICS = {"opens": "unique_opens", "clicks": "unique_clicks", "conversions": "conversions"}
STATUSES = ("active", "completed", "converted", "exited")
REMOVED = "removed from settings"  # the kind of a campaign whose messages outlived its settings


class UnknownCampaignError(MailerError):
    """`mailer report NAME` for a campaign settings do not name."""


def build_report(
    connection: Connection,
    settings: Settings,
    *,
    campaign: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_machine: bool = False,
    now: datetime,
) -> dict[str, Any]:
    """The report of `campaign` (None: every campaign in settings, then every campaign removed
    from settings that the outbox still holds messages of) over the messages queued in
    [since, until). People's opens and clicks only, unless `include_machine`."""
    if campaign is None:
        names = [*settings.campaigns, *removed_campaigns(connection, settings)]
    elif campaign in settings.campaigns or campaign in removed_campaigns(connection, settings):
        names = [campaign]
    else:
        known = ", ".join(settings.campaigns) or "none"
        raise UnknownCampaignError(f"{campaign}: no such campaign in settings (known: {known}), "
                                   "nor messages of it in the outbox")  # fmt: skip
    period = Period(since, until)
    counted = count_everything(connection, Scope(names, period), include_machine)
    decided = decisions(connection, names, period)
    return {
        "generated_at": now.isoformat(),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "include_machine": include_machine,
        "campaigns": [
            _campaign(name, settings.campaigns.get(name), counted, settings.reports, decided)
            for name in names
        ],
    }


def removed_campaigns(connection: Connection, settings: Settings) -> list[str]:
    """Campaigns no longer in settings whose messages the outbox still holds: their history
    is reported as it was counted, under kind REMOVED."""
    query = (select(outbox.c.campaign).distinct()
             .where(outbox.c.campaign.not_in(list(settings.campaigns)))
             .order_by(outbox.c.campaign))  # fmt: skip
    return list(connection.scalars(query))


def metrics(counts: Mapping[str, int], ranges: Reports) -> dict[str, Any]:
    """METRICS: every count, `delivered`, and the rates."""
    found = {name: int(counts.get(name, 0)) for name in COUNTS}
    bounced = found["hard_bounces"] + found["soft_bounces"]
    found["delivered"] = max(0, found["sent"] - bounced)
    with_bounced = found | {"bounced": bounced}
    rates = {name: _rate(with_bounced, *spec, ranges) for name, spec in RATES.items()}
    return {**found, "rates": rates}


def _rate(counts: Mapping[str, int], numerator: str, denominator: str, bound: str | None,
          side: str | None, ranges: Reports) -> dict[str, Any]:  # fmt: skip
    top, bottom = counts[numerator], counts[denominator]
    value = top / bottom if bottom else None
    flag = None
    if value is not None and bound is not None and bottom >= ranges.flag_from:
        limit: float = getattr(ranges, bound)
        if (side == "low" and value < limit) or (side == "high" and value > limit):
            flag = side
    return {"value": value, "numerator": top, "denominator": bottom, "flag": flag}


def _summed(parts: Iterable[Mapping[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for part in parts:
        total.update({name: part.get(name, 0) for name in COUNTS})
    return total


def _steps(name: str, spec: Campaign | None, counted: Counted) -> dict[str, list[str]]:
    """step -> variants: as settings name them (the base "A" first; a step's resend, which
    keeps the contact's variant, right after it), then any the outbox holds that settings no
    longer name (a step removed, or the whole campaign), in the order found."""
    steps: dict[str, list[str]] = {}
    for message in spec.messages() if spec is not None else []:
        steps[message.name] = [BASE_VARIANT, *message.variants]
        if message.resend is not None:
            steps[resent_name(message.name)] = [BASE_VARIANT, *message.variants]
    if spec is not None and spec.kind == "broadcast":
        steps.setdefault("broadcast", [BASE_VARIANT, *spec.variants])
    for campaign, step, variant in sorted(counted.counts):
        if campaign == name and variant not in (variants := steps.setdefault(step, [])):
            variants.append(variant)
    return steps


def _campaign(name: str, spec: Campaign | None, counted: Counted, ranges: Reports,
              decided: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:  # fmt: skip
    """One campaign's part of the report; `spec` None for a campaign removed from settings
    (no list, funnel or A/B decisions: settings said what those were)."""
    steps = []
    every: list[Counter[str]] = []
    for step, variants in _steps(name, spec, counted).items():
        per_variant = {v: counted.counts.get((name, step, v), Counter()) for v in variants}
        every.extend(per_variant.values())
        shown = [{"name": v, **metrics(c, ranges)} for v, c in per_variant.items()]
        steps.append({"name": step, "totals": metrics(_summed(per_variant.values()), ranges),
                      "variants": shown, "ab": _ab(shown) if len(shown) > 1 else None})  # fmt: skip
    kind = spec.kind if spec is not None else REMOVED
    return {
        "name": name, "kind": kind, "list": spec.list_name if spec is not None else None,
        "totals": metrics(_summed(every), ranges),
        "steps": steps,
        "funnel": _funnel(name, spec, counted) if spec and kind == "sequence" else None,
        "timeline": _timeline(counted.timeline.get(name, {})),
        "ab_decisions": decided.get(name, []) if kind == "broadcast" else None,
    }  # fmt: skip


def _ab(variants: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Each variant's people's opens, clicks and conversions per delivered message, compared
    (reports/ab.py)."""
    try:
        ab = importlib.import_module("mailer.reports.ab")
    except ImportError:
        return None
    found: dict[str, Any] = {}
    for metric, count in AB_METRICS.items():
        # A bounced message opened (a proxy fetched it) could make successes > trials.
        arms = [(v["name"], min(v[count], v["delivered"]), v["delivered"]) for v in variants]
        found[metric] = ab.compare(arms, metric)
    return found


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _funnel(name: str, spec: Campaign, counted: Counted) -> dict[str, Any]:
    statuses = counted.enrollments.get(name, Counter())
    reached = counted.reached.get(name, {})
    names = [step.name for step in spec.steps]
    names += sorted(step for step in reached if step not in names)
    steps = []
    for step in names:
        times = reached.get(step, [])
        steps.append({"name": step, "reached": len({enrollment for enrollment, _ in times}),
                      "median_hours_from_entry": _median([h for _, h in times])})  # fmt: skip
    return {
        "entered": sum(statuses.values()),
        **{status: statuses.get(status, 0) for status in STATUSES},
        "steps": steps,
        "median_hours_to_convert": _median(counted.hours_to_convert.get(name, [])),
    }


def _timeline(days: Mapping[str, Counter[str]]) -> list[dict[str, Any]]:
    return [
        {"date": day, "opens": kinds["open"], "clicks": kinds["click"],
         "machine_opens": kinds["machine_open"], "machine_clicks": kinds["machine_click"]}
        for day, kinds in sorted(days.items())
    ]  # fmt: skip
