"""The engine's commands: `mailer tick`, `plan`, `run`, `outbox` and `event`."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from mailer.campaigns.activity import record_activity
from mailer.campaigns.outbox import outbox_rows
from mailer.campaigns.plan import plan as make_plan
from mailer.cli import (
    _LazyWorkspace,
    cli,
    console,
    key_values,
    moment_option,
    pass_workspace,
    print_json,
    say,
)
from mailer.daemon import run as run_daemon
from mailer.daemon import simulate, tick_and_deliver
from mailer.delivery.retry import FailedMessages, check_names, passed_by, requeue_failed
from mailer.delivery.worker import Deliverer
from mailer.durations import parse_duration
from mailer.logs import brief_logs, configure


def _moment(text: str | None) -> datetime | None:
    return None if text is None else moment_option(text)


@cli.command()
@click.option("--now", "now_text", metavar="ISO-TIME",
              help="Pretend it is this time (UTC when no offset is given).")  # fmt: skip
@click.option("--until", "until_text", metavar="ISO-TIME",
              help="Simulate: tick hourly from --now until this time; a line a day.")  # fmt: skip
@click.option("--deliver-to-relay", is_flag=True,
              help="With --until: send through [smtp] even when it is not on this machine "
                   "(real mail, dated in the future); without it only a relay on 127.0.0.1 "
                   "or localhost, such as `mailer sink`, is used.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_workspace
def tick(lazy: _LazyWorkspace, now_text: str | None, until_text: str | None,
         deliver_to_relay: bool, as_json: bool) -> None:  # fmt: skip
    """One pass of the engine, then delivery: enroll contacts into sequences, queue the steps
    that are due (consent checked), and send what the outbox holds through the relay of
    settings [smtp] (consent checked again just before). Prints how many were sent, deferred
    (a temporary failure: retried later), failed and skipped. Safe to run again, or in two
    processes at once: nothing is queued or sent twice."""
    workspace = lazy.get()
    now = _moment(now_text)
    until = _moment(until_text)
    debug = bool(click.get_current_context().find_root().params.get("debug"))
    with brief_logs(debug):  # a campaign or render process that fails: one line on stderr
        if until is not None:
            days = simulate(workspace, now or workspace.clock.now(), until, deliver_to_relay)
        else:
            deliverer = Deliverer(workspace)
            try:
                days = {"now": tick_and_deliver(workspace, deliverer, now)}
            finally:
                deliverer.close()
    if as_json:
        print_json(next(iter(days.values())) if until is None else days)
        return
    for label, counts in days.items():
        line = ", ".join(f"{count} {name}" for name, count in counts.items())
        say(f"{label}  {line}" if until is not None else line)


@cli.command()
@click.option("--every", default="1m", show_default=True, help="How often to tick (30s, 5m, ...).")
@click.option("--log-json", is_flag=True, help="Log one JSON object a line.")
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Serve the tracking endpoint too (tracking.host, .port).")  # fmt: skip
@click.option("--now", "now_text", metavar="ISO-TIME",
              help="Start the clock at this time (UTC when no offset is given); it runs on from "
                   "there. Also MAILER_NOW, for every command.")  # fmt: skip
@pass_workspace
def run(lazy: _LazyWorkspace, every: str, log_json: bool, serve: bool,
        now_text: str | None) -> None:  # fmt: skip
    """The daemon: tick every --every, deliver continuously and serve the tracking endpoint,
    until SIGTERM or Ctrl-C; then finish the running tick, the SMTP transactions and HTTP
    requests in flight, give back unsent claimed messages, write buffered opens and clicks,
    and exit 0. Run several on PostgreSQL: they share the outbox, never a message."""
    try:
        interval = parse_duration(every)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    configure(log_json)
    lazy.start_clock_at(now_text)
    workspace = lazy.get()
    workspace.engine  # noqa: B018  (open and migrate before the first tick)
    run_daemon(workspace, interval, serve)


@cli.command()
@click.option("--now", "now_text", metavar="ISO-TIME", help="Plan from this time.")
@click.option("--horizon", default="7d", show_default=True, help="How far ahead (e.g. 2d, 2w).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@pass_workspace
def plan(lazy: _LazyWorkspace, now_text: str | None, horizon: str, as_json: bool) -> None:
    """What would be queued, per campaign and step, hour by hour over the horizon, and who
    is held back and why (no consent, outside a send window, left the list, ...). A dry run:
    nothing is written."""
    workspace = lazy.get()
    try:
        span = parse_duration(horizon)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    now = _moment(now_text) or workspace.clock.now()
    result = make_plan(workspace.engine, workspace.settings, now, span)
    if as_json:
        print_json(result.as_dict())
        return
    table = Table(title=f"Plan from {now:%Y-%m-%d %H:%M} UTC, {result.hours} hours",
                  title_justify="left")  # fmt: skip
    for column in ("campaign", "step", "messages", "first", "by day"):
        table.add_column(column)
    for (campaign, step), hours in sorted(result.queued.items()):
        first = result.first(campaign, step)
        by_day = ", ".join(f"{day:%a %d %b}: {count}"
                           for day, count in result.by_day(campaign, step).items())  # fmt: skip
        table.add_row(campaign, step, str(sum(hours.values())), f"{first:%a %d %b %H:%M}", by_day)
    console.print(table)
    for (campaign, reason), count in sorted(result.held_back.items()):
        say(f"held back  {campaign}: {count} ({reason})")


@cli.group("outbox", invoke_without_command=True)
@click.option("--contact", "email", help="Only this contact's messages.")
@click.option("--limit", default=50, show_default=True, help="How many rows, newest last.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_workspace
def outbox_command(lazy: _LazyWorkspace, email: str | None, limit: int, as_json: bool) -> None:
    """The messages the engine queued, oldest first: when each was sent, or why it was
    skipped, deferred (retried later) or failed, with the relay's answer (and which relay,
    when [smtp.fallbacks] are set).

    `mailer outbox retry` sends failed messages again."""
    if click.get_current_context().invoked_subcommand is not None:
        return
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        rows = outbox_rows(connection, email, limit)
    if as_json:
        print_json(rows)
        return
    columns = ["queued (UTC)", "sent", "contact", "campaign", "step", "variant", "status", "why"]
    relays = bool(workspace.settings.smtp.fallbacks)  # one relay: it carried everything
    if relays:
        columns.insert(-1, "relay")
    if email is not None:
        columns.remove("contact")  # the same on every row
    table = Table(*columns)
    for row in rows:
        queued, sent = (row[key][:16].replace("T", " ") if row[key] else ""
                        for key in ("queued_at", "sent_at"))  # fmt: skip
        if sent[:10] == queued[:10]:
            sent = sent[11:]  # the same day: the time says it
        why = "; ".join(part for part in (row["reason"], row["reply"])
                        if part and row["status"] != "sent")  # fmt: skip
        cells = [queued, sent, row["email"], row["campaign"], row["step"], row["variant"] or "",
                 row["status"], *([row["relay"] or ""] if relays else []), why]  # fmt: skip
        if email is not None:
            del cells[2]
        table.add_row(*cells)
    console.print(table)


@outbox_command.command("retry")
@click.option("--campaign", help="Only this campaign's failed messages.")
@click.option("--step", help="Only this step's (with --campaign).")
@click.option("--since", metavar="ISO-TIME|DURATION",
              help="Only messages queued since this time, or this long ago (e.g. 2d).")  # fmt: skip
@click.option("--reason", metavar="TEXT",
              help="Only messages whose reason contains TEXT (any case), e.g. render.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the count as JSON.")
@pass_workspace
def outbox_retry(lazy: _LazyWorkspace, campaign: str | None, step: str | None,
                 since: str | None, reason: str | None, as_json: bool) -> None:  # fmt: skip
    """Send failed messages again, once their cause is fixed (a template, the relay's
    settings): they go back in the queue and the next `mailer tick` or `mailer run` sends
    them, consent checked again at sending as for every message."""
    workspace = lazy.get()
    now = workspace.clock.now()
    which = FailedMessages(campaign, step, _since(since, now), reason)
    check_names(workspace.settings, which)
    with workspace.engine.begin() as connection:
        count = requeue_failed(connection, which, now)
        left = passed_by(connection, which)
    if as_json:
        print_json({"requeued": count, "left_failed": left})
        return
    say(f"{count} failed message{'' if count == 1 else 's'} re-queued"
        + ("; the next delivery sends them, consent checked again" if count else ""))  # fmt: skip
    if left:
        say(f"{left} left failed: a later step of their sequence went out since, and this "
            "one would now arrive after it")  # fmt: skip


def _since(text: str | None, now: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        return moment_option(text)


def property_value(text: str) -> Any:
    """A --prop value as the events API carries it in JSON: a number, true, false or a quoted
    text; anything else is the text itself. (A segment compares a number only with a number:
    `where value <= 6` never matches the text "4".)"""
    try:
        value = json.loads(text, parse_constant=lambda name: name)  # NaN, Infinity: text
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):  # 1e999: no database keeps it
        return text
    return value if isinstance(value, int | float | str) else text  # bool is an int


@cli.command("event")
@click.argument("email")
@click.argument("name")
@click.option("--prop", "props", multiple=True, metavar="KEY=VALUE",
              help="A property, e.g. --prop category=espresso or --prop value=24.50 (a number, "
                   'true or false is stored as one; --prop code=\'"42"\' as text); '
                   "repeatable.")  # fmt: skip
@click.option("--at", "at_text", metavar="ISO-TIME", help="When it happened (default: now).")
@pass_workspace
def event_command(lazy: _LazyWorkspace, email: str, name: str, props: tuple[str, ...],
                  at_text: str | None) -> None:  # fmt: skip
    """Record a website event for a contact (viewed_product, cart_abandoned, purchased, ...),
    as the shop would through the events API: it can trigger sequences, reach goals and
    shape segments."""
    properties = {key: property_value(value)
                  for key, value in key_values(props, "KEY=VALUE").items()}  # fmt: skip
    workspace = lazy.get()
    when = _moment(at_text) or workspace.clock.now()
    with workspace.engine.begin() as connection:
        event_id = record_activity(connection, workspace.settings, email, name, when, properties)
    say(f"event {event_id}: {name} for {email} at {when:%Y-%m-%d %H:%M} UTC")
