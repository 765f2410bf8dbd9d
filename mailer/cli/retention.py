"""`mailer retention run`: old opens and clicks rolled up, old click targets cleared."""

from __future__ import annotations

import click

from mailer.cli import _LazyWorkspace, cli, print_json, say
from mailer.retention import Pruned, run_retention


@cli.group()
def retention() -> None:
    """Tables that do not grow without end ([retention]); `mailer run` does this daily."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@click.pass_obj
def run_command(lazy: _LazyWorkspace, dry_run: bool, as_json: bool) -> None:
    """Roll up and delete opens and clicks older than [retention] events_after (website
    events after website_events_after, returned messages after returns_after), clear the
    click targets of messages sent before rendered_after. The consent ledger is never
    touched. Safe beside a running daemon."""
    workspace = lazy.get()
    pruned = run_retention(workspace.engine, workspace.settings, workspace.clock.now(), dry_run)
    if as_json:
        print_json(pruned.as_dict())
        return
    for line in summary(pruned):
        say(line)


def summary(pruned: Pruned) -> list[str]:
    verb = "would be" if pruned.dry_run else ""

    def said(count: int, what: str, done: str, before: object) -> str:
        if before is None:
            return f"{what}: kept (never)"
        return f"{count} {what} {verb + ' ' if verb else ''}{done} (before {before:%Y-%m-%d})"

    lines = [
        said(pruned.opens_and_clicks, "opens and clicks", "rolled up", pruned.events_before),
        said(pruned.website_events, "website events", "rolled up",
             pruned.website_events_before),
        said(pruned.returned, "returned messages (bounces, complaints, replies)", "rolled up",
             pruned.returns_before),
        f"click targets of {pruned.links_cleared} sent messages {verb + ' ' if verb else ''}"
        f"cleared" + ("" if pruned.links_before is None else
                      f" (sent before {pruned.links_before:%Y-%m-%d})"),
    ]  # fmt: skip
    if pruned.links_before is None:
        lines[-1] = "click targets: kept (never)"
    if pruned.webhook_calls_before is not None:
        lines.append(f"{pruned.webhook_calls} provider webhook calls kept against replays "
                     f"{verb + ' ' if verb else ''}forgotten (received before "
                     f"{pruned.webhook_calls_before:%Y-%m-%d %H:%M})")  # fmt: skip
    if pruned.unmatched:
        lines.append(f"{pruned.unmatched} of the opens and clicks were of no message: deleted")
    if pruned.busy:
        lines.append("another process is pruning: it finishes the work")
    return lines
