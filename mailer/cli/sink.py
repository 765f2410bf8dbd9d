"""`mailer sink`: the local trial SMTP server (no settings file or database needed)."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli import cli, say
from mailer.delivery.sink import serve_sink


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (127.0.0.1: this machine only).")  # fmt: skip
@click.option("--port", default=2525, show_default=True, type=click.IntRange(1, 65535),
              help="The port to listen on.")  # fmt: skip
@click.option("--dir", "directory", default=".mailer/sent", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The folder that keeps the messages (relative to the current folder; "
                   "created when missing).")  # fmt: skip
def sink(host: str, port: int, directory: Path) -> None:
    """A trial SMTP server that keeps every message in a folder: nothing leaves this machine.

    Each message becomes an .eml file in --dir (one per recipient; open it with any mail
    program) and a line on the screen. settings.toml's [smtp] points at 127.0.0.1:2525 as
    shipped, so campaigns can be tried end to end before a real relay is set up. Runs until
    Ctrl-C (or SIGTERM); needs no settings file or database.
    """
    serve_sink(host, port, directory, say)
