"""The report as rows (`mailer report --csv`): one per (campaign, step, variant), one per step's
totals (variant empty) and one per campaign's totals (step and variant empty); every count, and
each rate's value, numerator, denominator and flag. `read_rows` reads them back into the same
METRICS dicts, so the CSV says exactly what `--json` says (the funnel, the timeline and the A/B
auto-winner's decisions are only in `--json`, the tables and the HTML report: they are not
rows of counts)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from mailer.reports.counts import COUNTS
from mailer.reports.metrics import RATES

RATE_PARTS = ("value", "numerator", "denominator", "flag")
KEY_COLUMNS = ("campaign", "kind", "list", "step", "variant")
COLUMNS = (*KEY_COLUMNS, *COUNTS, *(f"{rate}_{part}" for rate in RATES for part in RATE_PARTS))


def report_rows(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each campaign's variants, each step's totals, then the campaign's totals."""
    for campaign in report["campaigns"]:
        key = {"campaign": campaign["name"], "kind": campaign["kind"], "list": campaign["list"]}
        for step in campaign["steps"]:
            for variant in step["variants"]:
                yield _row(key | {"step": step["name"], "variant": variant["name"]}, variant)
            yield _row(key | {"step": step["name"], "variant": ""}, step["totals"])
        yield _row(key | {"step": "", "variant": ""}, campaign["totals"])


def _row(key: dict[str, str], metrics: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = dict(key)
    row.update({name: metrics[name] for name in COUNTS})
    for rate, parts in metrics["rates"].items():
        row.update({f"{rate}_{part}": parts[part] for part in RATE_PARTS})
    return row


def write_csv(report: dict[str, Any], out: TextIO) -> None:
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report_rows(report):
        # repr of a float reads back as the same float; None is an empty cell
        writer.writerow({k: "" if v is None else repr(v) if isinstance(v, float) else v
                         for k, v in row.items()})  # fmt: skip


def read_rows(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The rows of `write_csv` with their types back: keys, ints, METRICS' `rates`."""
    found = []
    for text in csv.DictReader(lines):
        row: dict[str, Any] = {k: text[k] for k in KEY_COLUMNS}
        row.update({name: int(text[name]) for name in COUNTS})
        row["rates"] = {
            rate: {"value": float(text[f"{rate}_value"]) if text[f"{rate}_value"] else None,
                   "numerator": int(text[f"{rate}_numerator"]),
                   "denominator": int(text[f"{rate}_denominator"]),
                   "flag": text[f"{rate}_flag"] or None}
            for rate in RATES
        }  # fmt: skip
        found.append(row)
    return found
