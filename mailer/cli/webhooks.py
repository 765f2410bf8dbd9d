"""`mailer webhooks`: the outgoing webhooks' queue: status, delivering by hand, retrying."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import click
from rich.table import Table

from mailer.cli import _LazyWorkspace, cli, console, print_json, say
from mailer.durations import format_duration
from mailer.errors import MailerError
from mailer.webhooks_out.queue import requeue_dead, status
from mailer.webhooks_out.sender import WebhookSender, deliver_once


@cli.group()
def webhooks() -> None:
    """Outgoing webhooks ([webhooks.outgoing.NAME]): events POSTed to other systems."""


@webhooks.command("status")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@click.pass_obj
def status_command(lazy: _LazyWorkspace, as_json: bool) -> None:
    """Per subscription: pending, delivered in the last 24 hours, dead, the age of the oldest
    pending event and the last error."""
    workspace = lazy.get()
    now = workspace.clock.now()
    with workspace.engine.connect() as connection:
        found = status(connection, workspace.settings, now)
    if as_json:
        print_json([subscription.as_dict(now) for subscription in found])
        return
    if not found:
        say("no outgoing webhooks: add [webhooks.outgoing.NAME] to settings.toml")
        return
    table = Table("subscription", "pending", "delivered 24h", "dead", "oldest pending",
                  "last error")  # fmt: skip
    for row in found:
        oldest = "-" if row.oldest_pending is None else format_duration(now - row.oldest_pending)
        name = row.name if row.url else f"{row.name} (not in settings)"
        table.add_row(name, str(row.pending), str(row.delivered_24h), str(row.dead), oldest,
                      row.last_error or "-")  # fmt: skip
    console.print(table)


@webhooks.command("deliver")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.pass_obj
def deliver_command(lazy: _LazyWorkspace, once: bool) -> None:
    """POST the due events (`mailer run` does this itself); without --once, until Ctrl-C."""
    workspace = lazy.get()
    if once:
        counts = deliver_once(workspace.engine, workspace.settings, workspace.clock)
        say(", ".join(f"{name}: {counts[name]}" for name in ("delivered", "retry", "dead")))
        return

    async def forever() -> None:
        sender = WebhookSender(workspace.engine, workspace.settings, workspace.clock)
        try:
            await sender.run(asyncio.Event(), workspace.settings.delivery.poll.total_seconds())
        finally:
            await sender.close()

    with suppress(KeyboardInterrupt):
        asyncio.run(forever())


@webhooks.command("retry")
@click.argument("name")
@click.pass_obj
def retry_command(lazy: _LazyWorkspace, name: str) -> None:
    """Queue NAME's dead events again, due now, with a fresh round of attempts."""
    workspace = lazy.get()
    if name not in workspace.settings.webhooks.outgoing:
        known = ", ".join(workspace.settings.webhooks.outgoing) or "none"
        raise MailerError(f"{workspace.settings.source}: webhooks.outgoing.{name} is not in "
                          f"settings (known: {known})")  # fmt: skip
    with workspace.engine.begin() as connection:
        count = requeue_dead(connection, name, workspace.clock.now())
    say(f"{count} dead event(s) of {name} queued again")
