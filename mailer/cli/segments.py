"""`mailer segment count|show`: who is in a segment, now."""

from __future__ import annotations

import click
from rich.table import Table

from mailer.campaigns.segment_sql import SegmentCompiler, count_segment, sample_segment
from mailer.campaigns.segments import SegmentError, parse_segment
from mailer.cli import _LazyWorkspace, cli, console, pass_workspace, print_json, say
from mailer.errors import MailerError, SettingsError
from mailer.workspace import Workspace


@cli.group()
def segment() -> None:
    """Segments: count and show who is in one (by name from settings, or --where)."""


def _condition(workspace: Workspace, name: str | None, where: str | None):  # type: ignore[no-untyped-def]
    settings = workspace.settings
    if (name is None) == (where is None):
        raise click.UsageError("give a segment NAME or --where EXPRESSION (one of them)")
    if name is not None and name not in settings.segments:
        known = ", ".join(settings.segments) or "none"
        raise SettingsError(f"no segment '{name}' in {settings.source} (segments: {known})")
    source = settings.segments[name] if name is not None else str(where)
    label = f"segments.{name}" if name is not None else "--where"
    try:
        compiler = SegmentCompiler.for_settings(settings, workspace.clock.now())
        return compiler.where(parse_segment(source))
    except SegmentError as error:
        raise MailerError(f"{label}: {error}") from None


@segment.command()
@click.argument("name", required=False)
@click.option("--where", help="An expression instead of a named segment, e.g. 'orders > 1'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_workspace
def count(lazy: _LazyWorkspace, name: str | None, where: str | None, as_json: bool) -> None:
    """How many contacts are in the segment now."""
    workspace = lazy.get()
    condition = _condition(workspace, name, where)
    with workspace.engine.connect() as connection:
        total = count_segment(connection, condition)
    if as_json:
        print_json({"segment": name, "where": where, "count": total})
    else:
        say(f"{total} contacts")


@segment.command()
@click.argument("name", required=False)
@click.option("--where", help="An expression instead of a named segment.")
@click.option("--limit", default=20, show_default=True, help="How many contacts to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_workspace
def show(lazy: _LazyWorkspace, name: str | None, where: str | None, limit: int,
         as_json: bool) -> None:  # fmt: skip
    """The first contacts of the segment (by id)."""
    workspace = lazy.get()
    condition = _condition(workspace, name, where)
    with workspace.engine.connect() as connection:
        rows = sample_segment(connection, condition, limit)
        total = count_segment(connection, condition)
    if as_json:
        print_json({"count": total, "contacts": rows})
        return
    table = Table(title=f"{total} contacts" + (f", first {len(rows)}" if total > len(rows) else ""),
                  title_justify="left")  # fmt: skip
    for column in ("id", "email", "first_name", "last_name"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[column] or "") for column in ("id", "email", "first_name",
                                                                "last_name")))  # fmt: skip
    console.print(table)
