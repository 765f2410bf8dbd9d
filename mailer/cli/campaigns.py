"""`mailer campaign pause | resume | list | failing`: hold a campaign's delivery, let it go
again, and see the runs whose due step fails."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich.table import Table

from mailer.campaigns.broadcast_runs import broadcast_states
from mailer.campaigns.failing import failing_runs
from mailer.cli import _LazyWorkspace, cli, console, pass_workspace, print_json, say
from mailer.delivery.pauses import campaign_states, pause, resume_sending
from mailer.errors import MailerError
from mailer.workspace import Workspace


@cli.group()
def campaign() -> None:
    """Pause and resume the delivery of a campaign. A paused campaign's messages wait in
    the outbox (the engine keeps queueing them on time) and go out when it is resumed.
    Delivery pauses a campaign by itself when the relay refuses many messages in a row."""


def named(workspace: Workspace, name: str | None, every: bool, verb: str) -> list[str]:
    """The campaigns a command names: NAME, or with --all every campaign of settings."""
    if every == (name is not None):
        raise MailerError(f"name one campaign to {verb} (`mailer campaign {verb} NAME`), "
                          "or give --all, not both")  # fmt: skip
    return list(workspace.settings.campaigns) if every else [name or ""]


@campaign.command("pause")
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True, help="Pause every campaign of settings.")
@click.option("--reason", default="paused by an operator", show_default=True,
              help="Why: shown by `mailer campaign list`.")  # fmt: skip
@pass_workspace
def pause_command(lazy: _LazyWorkspace, name: str | None, every: bool, reason: str) -> None:
    """Hold the delivery of campaign NAME, or of every campaign with --all (running workers
    stop taking their messages at their next batch)."""
    workspace = lazy.get()
    names = named(workspace, name, every, "pause")
    with workspace.engine.begin() as connection:
        for each in names:
            pause(connection, workspace.settings, each, reason, workspace.clock.now())
    for each in names:
        say(f"{each}: paused ({reason})")
    again = "mailer campaign resume " + ("--all" if every else names[0])
    say(f"`{again}` lets {'them' if every else 'it'} go again")


@campaign.command("resume")
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True, help="Resume every campaign of settings.")
@pass_workspace
def resume_command(lazy: _LazyWorkspace, name: str | None, every: bool) -> None:
    """Deliver campaign NAME again (every campaign with --all), starting with the messages
    that waited: deferred ones are due at once, not after their retry delay."""
    workspace = lazy.get()
    now = workspace.clock.now()
    with workspace.engine.begin() as connection:
        for each in named(workspace, name, every, "resume"):
            was_paused, due = resume_sending(connection, workspace.settings, each, now)
            say(f"{each}: {'resumed' if was_paused else 'was not paused'}; "
                f"{due} deferred message{'' if due == 1 else 's'} due now")  # fmt: skip


@campaign.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_workspace
def list_command(lazy: _LazyWorkspace, as_json: bool) -> None:
    """Every campaign of settings: paused or not, its messages by delivery status, and where
    each broadcast stands (scheduled, sending, held, sent, stale) and why. A broadcast edited
    after its first zones went is held (its delivery paused too) until the settings are
    restored."""
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        states = campaign_states(connection, workspace.settings)
        broadcasts = broadcast_states(connection, workspace.settings, workspace.clock.now())
    for state in states:
        broadcast = broadcasts.get(state["campaign"])
        state["broadcast"] = broadcast.as_dict() if broadcast else None
    if as_json:
        print_json(states)
        return
    table = Table()
    statuses = ("queued", "deferred", "sent", "failed", "skipped")
    for column in ("campaign", "kind", "delivery", *statuses, "broadcast"):
        table.add_column(column, justify="right" if column in statuses else "left")
    for state in states:
        delivery = f"paused: {state['paused']}" if state["paused"] else "running"
        broadcast = state["broadcast"]
        table.add_row(state["campaign"], state["kind"], delivery,
                      *(str(state["messages"].get(status, 0)) for status in statuses),
                      f"{broadcast['state']}: {broadcast['why']}" if broadcast else "")  # fmt: skip
    console.print(table)


@campaign.command("failing")
@click.argument("name", required=False)
@click.option("--limit", default=20, show_default=True, help="Show at most this many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_workspace
def failing_command(lazy: _LazyWorkspace, name: str | None, limit: int, as_json: bool) -> None:
    """Sequence runs (of campaign NAME, or of all) whose due step fails at every tick, longest
    failing first: who, since when, the next try and the error. The engine tries each again
    every 10 minutes and the other runs go on; fix the data or the settings the error names."""
    workspace = lazy.get()
    if name is not None and name not in workspace.settings.campaigns:
        known = ", ".join(workspace.settings.campaigns) or "none"
        raise MailerError(f"no campaign '{name}' in {workspace.settings.source} "
                          f"(campaigns: {known})")  # fmt: skip
    with workspace.engine.connect() as connection:
        count, runs = failing_runs(connection, name, limit)
    if as_json:
        print_json({"failing": count, "runs": [run.as_dict() for run in runs]})
        return
    if not runs:
        say("no failing runs")
        return
    for run in runs:  # the error on a line of its own: it is long, and the point
        step = f"after {run.last_step}" if run.last_step else "first step"
        say(f"{run.campaign}  {run.email}  ({step}; failing since {_minute(run.failing_since)}, "
            f"next try {_minute(run.next_try)})\n  {run.reason}")  # fmt: skip
    if count > len(runs):
        say(f"{count} failing runs in all; --limit {count} shows every one")


def _minute(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else ""
