"""`mailer report [CAMPAIGN]`: how each campaign did, per step and per variant, as tables, JSON,
CSV or one self-contained HTML file."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mailer.cli import _LazyWorkspace, cli, console, moment_option, pass_workspace, print_json, say
from mailer.errors import MailerError
from mailer.reports.decisions import summary
from mailer.reports.flat import write_csv
from mailer.reports.metrics import build_report
from mailer.store.engine import reading

FLAGGED = {"low": " (low)", "high": " (high)"}


@cli.command()
@click.argument("campaign", required=False)
@click.option("--since", help="Messages queued from this ISO time (inclusive; UTC unless given).")
@click.option("--until", help="Messages queued before this ISO time.")
@click.option(
    "--include-machine",
    is_flag=True,
    help="Count machines' opens and clicks (scanners, proxies) in opens and clicks too.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--csv", "as_csv", is_flag=True, help="Print CSV: a row per step and variant, and totals rows."
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report as one self-contained HTML file.",
)
@pass_workspace
def report(
    lazy: _LazyWorkspace, campaign: str | None, since: str | None, until: str | None,
    include_machine: bool, as_json: bool, as_csv: bool, html_file: Path | None,
) -> None:  # fmt: skip
    """How each campaign did (or CAMPAIGN): messages, deliveries, people's opens and clicks,
    unsubscribes, complaints, conversions, per step and variant; the funnel of a sequence; A/B
    verdicts and a broadcast's auto-winner decisions. Rates outside [reports] ranges are
    flagged once they count [reports] flag_from messages (100 by default)."""
    if sum((as_json, as_csv, html_file is not None)) > 1:
        raise click.UsageError("--json, --csv and --html are alternatives: give one")
    workspace = lazy.get()
    with reading(workspace.engine) as connection:
        found = build_report(connection, workspace.settings, campaign=campaign,
                             since=moment_option(since) if since else None,
                             until=moment_option(until) if until else None,
                             include_machine=include_machine,
                             now=workspace.clock.now())  # fmt: skip
    if as_json:
        print_json(found)
    elif as_csv:
        write_csv(found, sys.stdout)
    elif html_file is not None:
        html_file.write_text(_html(found), encoding="utf-8")
        say(f"wrote {html_file}")
    else:
        for each in found["campaigns"]:
            _show(each, found["include_machine"], workspace.settings.reports.flag_from)


def _html(found: dict[str, Any]) -> str:
    try:
        html = importlib.import_module("mailer.reports.html")
    except ImportError as error:
        raise MailerError(f"--html: the HTML report is not available ({error})") from None
    return str(html.render_report(found))


def _percent(rate: dict[str, Any]) -> str:
    if rate["value"] is None:
        return "-"
    return f"{rate['value']:.1%}" + FLAGGED.get(rate["flag"] or "", "")


def _rows(campaign: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(step, variant, METRICS): each variant, a step's total when it has several, the total."""
    rows = []
    for step in campaign["steps"]:
        rows += [(step["name"], v["name"], v) for v in step["variants"]]
        if len(step["variants"]) > 1:
            rows.append((step["name"], "all", step["totals"]))
    rows.append(("total", "", campaign["totals"]))
    return rows


def _table(title: str, *columns: str) -> Table:
    table = Table("step", "var", title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right")
    return table


def _numbers(metrics: dict[str, Any], *names: str) -> list[str]:
    return [str(metrics[name]) for name in names]


def _show(campaign: dict[str, Any], include_machine: bool, flag_from: int) -> None:
    who = "people and machines" if include_machine else "people"
    where = f", list {campaign['list']}" if campaign["list"] else ""
    say(f"{campaign['name']} ({campaign['kind']}{where}): opens and clicks of {who}")
    messages = _table("messages", "queued", "sent", "failed", "skipped", "delivered",
                      "bounced")  # fmt: skip
    engaged = _table("engagement", "opens", "clicks", "machines", "unsub.", "compl.", "conv.",
                     "answers")  # fmt: skip
    rates = _table("rates", "delivery", "open", "click-thru", "click/open", "unsub.",
                   "complaint", "bounce")  # fmt: skip
    for step, variant, m in _rows(campaign):
        messages.add_row(step, variant, *_numbers(m, "queued", "sent", "failed", "skipped",
                                                  "delivered"),
                         f"{m['hard_bounces']}/{m['soft_bounces']}")  # fmt: skip
        engaged.add_row(step, variant, f"{m['unique_opens']}/{m['total_opens']}",
                        f"{m['unique_clicks']}/{m['total_clicks']}",
                        f"{m['machine_opens']}/{m['machine_clicks']}",
                        *_numbers(m, "unsubscribes", "complaints", "conversions",
                                  "survey_answers"))  # fmt: skip
        rates.add_row(step, variant, *(_percent(rate) for rate in m["rates"].values()))
    messages.caption = "bounced: hard/soft"
    engaged.caption = "opens, clicks: unique/total; machines: opens/clicks"
    many = f"{flag_from} message" + ("s" if flag_from != 1 else "")
    # \[: not rich markup
    rates.caption = f"(low), (high): outside the \\[reports] ranges, from {many} on"
    for table in (messages, engaged, rates):
        console.print(table)
    if campaign["funnel"] is not None:
        _show_funnel(campaign["funnel"])
    for step in campaign["steps"]:
        for metric, verdict in (step["ab"] or {}).items():
            say(f"A/B {step['name']}, {metric}: {verdict['verdict']}")
    for decision in campaign["ab_decisions"] or []:
        say(summary(campaign["name"], decision))
    say("")


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} h"


def _show_funnel(funnel: dict[str, Any]) -> None:
    table = Table("step", "reached", "of entered", "median time from entry", title="funnel",
                  title_justify="left")  # fmt: skip
    entered = funnel["entered"]
    for step in funnel["steps"]:
        share = f"{step['reached'] / entered:.1%}" if entered else "-"
        table.add_row(step["name"], str(step["reached"]), share,
                      _hours(step["median_hours_from_entry"]))  # fmt: skip
    console.print(table)
    say(f"entered {entered}: active {funnel['active']}, completed {funnel['completed']}, "
        f"converted {funnel['converted']} (median {_hours(funnel['median_hours_to_convert'])} "
        f"after entering), exited {funnel['exited']}")  # fmt: skip
