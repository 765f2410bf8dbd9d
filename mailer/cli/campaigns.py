"""`mailer campaign pause | resume | list`: hold a campaign's delivery, and let it go again."""

from __future__ import annotations

import click
from rich.table import Table

from mailer.campaigns.broadcast_runs import broadcast_states
from mailer.cli import _LazyWorkspace, cli, console, pass_workspace, print_json, say
from mailer.delivery.pauses import campaign_states, pause, resume


@cli.group()
def campaign() -> None:
    """Pause and resume the delivery of a campaign. A paused campaign's messages wait in
    the outbox (the engine keeps queueing them on time) and go out when it is resumed.
    Delivery pauses a campaign by itself when the relay refuses many messages in a row."""


@campaign.command("pause")
@click.argument("name")
@click.option("--reason", default="paused by an operator", show_default=True,
              help="Why: shown by `mailer campaign list`.")  # fmt: skip
@pass_workspace
def pause_command(lazy: _LazyWorkspace, name: str, reason: str) -> None:
    """Hold the delivery of campaign NAME (running workers stop taking its messages at their
    next batch)."""
    workspace = lazy.get()
    with workspace.engine.begin() as connection:
        pause(connection, workspace.settings, name, reason, workspace.clock.now())
    say(f"{name}: paused ({reason}); `mailer campaign resume {name}` lets it go again")


@campaign.command("resume")
@click.argument("name")
@pass_workspace
def resume_command(lazy: _LazyWorkspace, name: str) -> None:
    """Deliver campaign NAME again, starting with the messages that waited."""
    workspace = lazy.get()
    with workspace.engine.begin() as connection:
        was_paused = resume(connection, workspace.settings, name)
    say(f"{name}: resumed" if was_paused else f"{name}: was not paused")


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
