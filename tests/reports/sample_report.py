"""A report written by hand in the shape of `mailer report --json` (see reports/metrics.py):
a welcome sequence with an A/B tested first step, and a broadcast with a flagged rate."""

from __future__ import annotations

import copy
from typing import Any

COUNTS = (
    "queued", "sent", "failed", "skipped", "hard_bounces", "soft_bounces", "unique_opens",
    "total_opens", "unique_clicks", "total_clicks", "machine_opens", "machine_clicks",
    "unsubscribes", "complaints", "conversions", "survey_answers",
)  # fmt: skip


def rate(numerator: int, denominator: int, flag: str | None = None) -> dict[str, Any]:
    value = numerator / denominator if denominator else None
    return {"value": value, "numerator": numerator, "denominator": denominator, "flag": flag}


def metrics(flags: dict[str, str] | None = None, **given: int) -> dict[str, Any]:
    counts = {name: given.get(name, 0) for name in COUNTS}
    flags = flags or {}
    bounced = counts["hard_bounces"] + counts["soft_bounces"]
    delivered = counts["sent"] - bounced
    opens, clicks = counts["unique_opens"], counts["unique_clicks"]
    return {**counts, "delivered": delivered, "rates": {
        "delivery": rate(delivered, counts["sent"], flags.get("delivery")),
        "open": rate(opens, delivered, flags.get("open")),
        "click_through": rate(clicks, delivered, flags.get("click_through")),
        "click_to_open": rate(clicks, opens),
        "unsubscribe": rate(counts["unsubscribes"], delivered),
        "complaint": rate(counts["complaints"], delivered, flags.get("complaint")),
        "bounce": rate(bounced, counts["sent"], flags.get("bounce")),
    }}  # fmt: skip


def ab(metric: str, rate_a: float, rate_b: float, winner: str | None,
       verdict: str) -> dict[str, Any]:  # fmt: skip
    difference = rate_b - rate_a
    return {"metric": metric, "leader": "B", "baseline": "A", "winner": winner,
            "verdict": verdict, "needed_per_variant": None if winner else 420,
            "comparisons": [{"variant": "B", "against": "A", "rate": rate_b,
                             "baseline_rate": rate_a, "difference": difference,
                             "ci_low": difference - 0.05, "ci_high": difference + 0.05,
                             "p_value": 0.012 if winner else 0.31,
                             "confident": winner is not None}]}  # fmt: skip


def sample_report() -> dict[str, Any]:
    a = metrics(queued=60, sent=60, hard_bounces=1, unique_opens=24, total_opens=31,
                unique_clicks=6, total_clicks=7, machine_opens=9, machine_clicks=2,
                conversions=2)  # fmt: skip
    b = metrics(queued=60, sent=59, failed=1, unique_opens=30, total_opens=44, unique_clicks=14,
                total_clicks=19, machine_opens=7, machine_clicks=3, unsubscribes=1,
                conversions=5, survey_answers=3)  # fmt: skip
    hello = metrics(**{k: a[k] + b[k] for k in COUNTS})
    story = metrics(queued=110, sent=108, skipped=2, soft_bounces=2, unique_opens=41,
                    total_opens=50, unique_clicks=12, total_clicks=12, machine_opens=10,
                    unsubscribes=2, conversions=3)  # fmt: skip
    welcome_totals = metrics(**{k: hello[k] + story[k] for k in COUNTS})
    spring = metrics({"open": "low", "complaint": "high"}, queued=400, sent=400,
                     hard_bounces=4, unique_opens=22, total_opens=25, unique_clicks=1,
                     total_clicks=1, machine_opens=80, machine_clicks=12, unsubscribes=6,
                     complaints=2)  # fmt: skip
    return {
        "generated_at": "2026-11-23T10:00:00+00:00", "since": None, "until": None,
        "include_machine": False,
        "campaigns": [
            {"name": "welcome", "kind": "sequence", "list": "newsletter",
             "totals": welcome_totals,
             "steps": [
                 {"name": "hello", "totals": hello,
                  "variants": [{"name": "A", **a}, {"name": "B", **b}],
                  "ab": {"opens": ab("opens", 24 / 59, 30 / 59, None,
                                     "no winner yet: about 420 more recipients per variant "
                                     "needed"),
                         "clicks": ab("clicks", 6 / 59, 14 / 59, "B",
                                      "B wins on clicks, 98% confident"),
                         "conversions": None}},
                 {"name": "our-story", "totals": story,
                  "variants": [{"name": "A", **story}], "ab": None}],
             "funnel": {"entered": 120, "active": 30, "completed": 70, "converted": 10,
                        "exited": 10,
                        "steps": [{"name": "hello", "reached": 119,
                                   "median_hours_from_entry": 0.1},
                                  {"name": "our-story", "reached": 110,
                                   "median_hours_from_entry": 72.5}],
                        "median_hours_to_convert": 30.25},
             "timeline": [
                 {"date": "2026-11-18", "opens": 20, "clicks": 5, "machine_opens": 9,
                  "machine_clicks": 2},
                 {"date": "2026-11-19", "opens": 14, "clicks": 6, "machine_opens": 4,
                  "machine_clicks": 1},
                 {"date": "2026-11-21", "opens": 31, "clicks": 12, "machine_opens": 8,
                  "machine_clicks": 2},
                 {"date": "2026-11-22", "opens": 30, "clicks": 9, "machine_opens": 5,
                  "machine_clicks": 0}]},
            {"name": "spring_launch", "kind": "broadcast", "list": "newsletter",
             "totals": spring,
             "steps": [{"name": "broadcast", "totals": spring,
                        "variants": [{"name": "A", **spring}], "ab": None}],
             "funnel": None,
             "timeline": [{"date": "2026-11-20", "opens": 22, "clicks": 1,
                           "machine_opens": 80, "machine_clicks": 12}]},
        ],
    }  # fmt: skip


def renamed(report: dict[str, Any], campaign: str, step: str) -> dict[str, Any]:
    """The report with its first campaign and that campaign's first step renamed."""
    changed = copy.deepcopy(report)
    first = changed["campaigns"][0]
    old = first["steps"][0]["name"]
    first["name"] = campaign
    first["steps"][0]["name"] = step
    for funnel_step in (first["funnel"] or {"steps": []})["steps"]:
        if funnel_step["name"] == old:
            funnel_step["name"] = step
    return changed
