"""The numbers of a report two ways, to compare them: as `mailer report --json` holds them, and
as the HTML page shows them (its elements' data-* attributes). Keys are (campaign, step,
variant, metric, date); an empty step is the campaign's totals, an empty variant the step's."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

Key = tuple[str, str, str, str, str]
COMPARED = ("rate", "baseline_rate", "difference", "ci_low", "ci_high", "p_value", "confident")


def report_numbers(report: dict[str, Any]) -> dict[Key, Any]:
    """Every number of the report (and each A/B verdict), by key."""
    found: dict[Key, Any] = {}

    def metrics(campaign: str, step: str, variant: str, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if name == "rates":
                for rate, parts in value.items():
                    for part, number in parts.items():
                        found[(campaign, step, variant, f"rates.{rate}.{part}", "")] = number
            elif name != "name":
                found[(campaign, step, variant, name, "")] = value

    for campaign in report["campaigns"]:
        name = campaign["name"]
        metrics(name, "", "", campaign["totals"])
        for step in campaign["steps"]:
            metrics(name, step["name"], "", step["totals"])
            if len(step["variants"]) > 1:  # a step's only variant is the step itself
                for variant in step["variants"]:
                    metrics(name, step["name"], variant["name"], variant)
            for metric, ab in (step["ab"] or {}).items():
                if ab is None:
                    continue
                found[(name, step["name"], "", f"ab.{metric}.verdict", "")] = ab["verdict"]
                for comparison in ab["comparisons"]:
                    variant = comparison["variant"]
                    for field in COMPARED:
                        found[(name, step["name"], variant, f"ab.{metric}.{field}", "")] = (
                            comparison[field]
                        )
        funnel = campaign["funnel"]
        if funnel is not None:
            for field, value in funnel.items():
                if field != "steps":
                    found[(name, "", "", f"funnel.{field}", "")] = value
            for step in funnel["steps"]:
                for field in ("reached", "median_hours_from_entry"):
                    found[(name, step["name"], "", f"funnel.{field}", "")] = step[field]
        for day in campaign["timeline"]:
            for field, value in day.items():
                if field != "date":
                    found[(name, "", "", f"timeline.{field}", day["date"])] = value
    return found


class _NumberElements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[Key, Any, str]] = []
        self.open: list[list[Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "data-metric" in values:
            key = (values["data-campaign"], values["data-step"], values["data-variant"],
                   values["data-metric"], values.get("data-date", ""))  # fmt: skip
            self.open.append([key, json.loads(values["data-value"]), ""])
        elif self.open:
            self.open.append([None, None, ""])

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element[2] += data

    def handle_endtag(self, tag: str) -> None:
        if self.open:
            key, value, text = self.open.pop()
            if key is not None:
                self.found.append((key, value, text.strip()))


def page_numbers(html: str) -> list[tuple[Key, Any, str]]:
    """(key, data-value, text shown) of every element of the page that carries a number."""
    parser = _NumberElements()
    parser.feed(html)
    parser.close()
    return parser.found
