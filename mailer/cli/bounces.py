"""`mailer bounces ingest`: read returned mail from files, mbox files and Maildirs."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from mailer.cli import _LazyWorkspace, cli, console, pass_workspace
from mailer.returns.ingest import ingest


@cli.group()
def bounces() -> None:
    """Returned mail: bounces, complaints (ARF) and auto-replies."""


@bounces.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Classify and match; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message, per line.")
@pass_workspace
def ingest_command(lazy: _LazyWorkspace, paths: tuple[Path, ...], dry_run: bool,
                   as_json: bool) -> None:  # fmt: skip
    """Classify every message in PATHS (.eml files, mbox files, Maildir folders), match it
    to the message we sent (VERP token, then Message-ID, then the address) and apply the
    [returns] policy: suppress hard bounces, count soft ones, withdraw complainers. Delay
    warnings, success reports and auto-replies change nothing."""
    rows = ingest(lazy.get(), paths, dry_run)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.as_json(), ensure_ascii=False))
        return
    table = Table("file", "classification", "recipient", "status", "message", "action")
    for row in rows:
        r = row.returned
        table.add_row(row.file, r.classification, r.recipient or "-", r.status_code or "-",
                      str(row.outbox_id) if row.outbox_id is not None else "-",
                      row.action_taken)  # fmt: skip
    console.print(table)
