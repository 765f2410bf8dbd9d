"""The `mailer` command. Each subcommand parses its arguments, calls one library function and
prints the result: tables for people, `--json` for machines, errors as one line on stderr.

Exit status: 0 done, 1 an error the user can fix (the message says what), 2 a usage error.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import click
from rich.console import Console

from mailer.clock import Clock, StartedClock, clock_from_environment, parse_moment
from mailer.config import load_settings
from mailer.errors import MailerError
from mailer.workspace import Workspace

err_console = Console(stderr=True, highlight=False)
console = Console(highlight=False)


class MailerGroup(click.Group):
    """Turns every MailerError into exit status 1 and one line on stderr (a traceback only with
    --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailerError as error:
            if ctx.params.get("debug") or os.environ.get("MAILER_DEBUG"):
                raise
            for line in str(error).splitlines():
                click.echo(f"mailer: {line}", err=True)
            ctx.exit(1)


@click.group(cls=MailerGroup)
@click.option(
    "--config", "config_path", envvar="MAILER_CONFIG", default="settings.toml",
    show_default=True, type=click.Path(dir_okay=False),
    help="The settings file (or set MAILER_CONFIG).",
)  # fmt: skip
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="mailer")
@click.pass_context
def cli(ctx: click.Context, config_path: str, debug: bool) -> None:
    """mailer: email marketing automation whose campaigns live in files.

    Campaigns are settings.toml, Jinja templates in templates/ and contact lists in lists/.
    Start with `mailer new DIR` (a starter project), then `mailer init`, `mailer check` and
    `mailer import`.
    """
    ctx.obj = _LazyWorkspace(config_path)
    ctx.call_on_close(ctx.obj.close)


class _LazyWorkspace:
    """Opens settings and database only when a command needs them, so --help always works."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.clock: Clock | None = None  # None: the system clock, or MAILER_NOW's
        self._workspace: Workspace | None = None

    def get(self) -> Workspace:
        if self._workspace is None:
            clock = self.clock or clock_from_environment()
            self._workspace = Workspace(load_settings(self.config_path), clock)
        return self._workspace

    def start_clock_at(self, text: str | None) -> None:
        """`--now` of the long-running commands: the clock starts there and runs on."""
        if text is not None:
            self.clock = StartedClock(moment_option(text))

    def close(self) -> None:
        if self._workspace is not None:
            self._workspace.close()


pass_workspace = click.make_pass_decorator(_LazyWorkspace)


def say(text: str) -> None:
    """A plain line on stdout (rich would wrap it at the terminal width, even in a pipe)."""
    click.echo(text)


def warn(text: str) -> None:
    """A plain line on stderr: `file:line: what is wrong` stays one greppable line."""
    click.echo(text, err=True)


def key_values(pairs: tuple[str, ...], form: str, split_at_last: bool = False) -> dict[str, str]:
    """Repeated KEY=VALUE options as a dict; a malformed one is a usage error naming it."""
    found = {}
    for pair in pairs:
        key, separator, value = pair.rpartition("=") if split_at_last else pair.partition("=")
        if not separator or not key:
            raise click.BadParameter(f"'{pair}': write {form}")
        found[key] = value
    return found


def moment_option(text: str) -> datetime:
    """An ISO time given on the command line (UTC when it names no offset)."""
    try:
        return parse_moment(text)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not an ISO time (e.g. 2026-11-23T09:00Z)") from None


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def main() -> None:
    cli(prog_name="mailer")


from mailer.cli import (  # noqa: E402
    audit,
    bounces,
    campaigns,
    consent,
    contacts,
    db,
    doctor,
    engine,
    inbound,
    messages,
    project,
    report,
    retention,
    segments,
    sink,
    tracking,
    webhooks,
)

__all__ = [
    "audit",
    "bounces",
    "campaigns",
    "cli",
    "consent",
    "contacts",
    "db",
    "doctor",
    "engine",
    "inbound",
    "main",
    "messages",
    "project",
    "report",
    "retention",
    "segments",
    "sink",
    "tracking",
    "webhooks",
]
