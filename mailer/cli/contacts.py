"""`mailer import` and `mailer contacts ...`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from sqlalchemy import Connection

from mailer.campaigns.activity import update_stages
from mailer.cli import (
    _LazyWorkspace,
    cli,
    err_console,
    key_values,
    pass_workspace,
    print_json,
    say,
    warn,
)
from mailer.clock import Clock
from mailer.config import Settings
from mailer.contacts.cells import printable
from mailer.contacts.export import export_contacts
from mailer.contacts.importer import ImportOptions, import_contacts
from mailer.errors import MailerError

SHOWN_REJECTS = 20


def _move_stages(settings: Settings, clock: Clock, connection: Connection, ids: list[int]) -> None:
    update_stages(connection, settings, ids, clock.now())


@cli.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--list", "list_name", required=True, help="The list (defined in settings) to add to."
)
@click.option("--map", "maps", multiple=True, metavar="HEADER=FIELD",
              help="Map a column, e.g. --map 'E-Mail=email' or --map 'Notes=-' to drop it. "
                   "Adds to [lists.NAME.columns].")  # fmt: skip
@click.option("--delimiter", help="The field delimiter, when detection guesses wrong.")
@click.option("--rejects", type=click.Path(path_type=Path),
              help="Where to write rejected rows [default: FILE.rejects.csv].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_workspace
def import_(
    lazy: _LazyWorkspace, file: Path, list_name: str, maps: tuple[str, ...],
    delimiter: str | None, rejects: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Import contacts from a CSV FILE into a list.

    The header names the columns: email, first_name, last_name, tags (separated by ; , or |),
    timezone, locale; consent evidence: consent_at, consent_confirmed_at, consent_source,
    consent_ip, consent_user_agent, consent_text, consent_text_version; every other column
    becomes an attribute. Rows without consent_at import the contact and grant nothing.

    Bad rows are reported with their line and written to FILE.rejects.csv; the rest imports.
    Suppressed addresses (unsubscribed, bounced, erased) are never re-subscribed.
    """
    workspace = lazy.get()
    spec = workspace.settings.contact_list(list_name)
    options = ImportOptions(
        list_name=list_name,
        double_opt_in=workspace.double_opt_in,
        columns=spec.columns | key_values(maps, "HEADER=FIELD, e.g. 'E-Mail=email'", True),
        tags=tuple(spec.tags),
        attribute_types=workspace.settings.attributes,
        delimiter=delimiter,
        rejects_path=rejects,
        after_batch=partial(_move_stages, workspace.settings, workspace.clock),
    )
    rejected, warned = _Reported(file, "rejected rows"), _Reported(file, "warnings")
    with _progress_bar(file) as update:
        summary = import_contacts(
            workspace.engine, file, options, workspace.key, workspace.clock, update,
            rejected.report, warned.report,
        )  # fmt: skip
    rejected.finish()
    warned.finish()
    if summary.rejects_file:
        warn(f"rejected rows written to {summary.rejects_file}")
    if as_json:
        print_json(summary.as_dict())
    else:
        say(
            f"{file}: {summary.imported} imported, {summary.updated} updated, "
            f"{summary.rejected} rejected, {summary.suppressed} suppressed (not re-subscribed), "
            f"{summary.consent_recorded} consent entries recorded"
            + (f", {summary.warnings} values left out or cut short" if summary.warnings else "")
            + ("; the database's statistics refreshed (ANALYZE)" if summary.analyzed else "")
        )


class _Reported:
    """The first SHOWN_REJECTS lines of one kind on stderr, as `file:line: reason`, escaped so
    that no cell can forge a line or move the terminal; then how many more there were."""

    def __init__(self, file: Path, kind: str) -> None:
        self._file, self._kind, self._count = file, kind, 0

    def report(self, line: int, reason: str) -> None:
        self._count += 1
        if self._count <= SHOWN_REJECTS:
            warn(printable(f"{self._file}:{line}: {reason}"))

    def finish(self) -> None:
        if self._count > SHOWN_REJECTS:
            warn(f"... and {self._count - SHOWN_REJECTS} more {self._kind}")


class _progress_bar:
    """A progress bar over the file's bytes, on a terminal only."""

    def __init__(self, file: Path) -> None:
        self._progress = Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
            TimeRemainingColumn(), console=err_console, transient=True,
            disable=not sys.stderr.isatty(),
        )  # fmt: skip
        self._task = self._progress.add_task(f"importing {file.name}", total=None)

    def __enter__(self) -> Callable[[int, int], None]:
        self._progress.start()
        return self._update

    def _update(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *_: object) -> None:
        self._progress.stop()


@cli.group()
def contacts() -> None:
    """Contacts: export."""


@contacts.command("export")
@click.option("--list", "list_name", help="Only the contacts of this list.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write to this file instead of standard output.")  # fmt: skip
@pass_workspace
def export(lazy: _LazyWorkspace, list_name: str | None, out: Path | None) -> None:
    """Export contacts as CSV (UTF-8), ready to re-import.

    Cells a spreadsheet would run as a formula (starting with = + - @) get a leading
    apostrophe; `mailer import` removes it again.
    """
    workspace = lazy.get()
    if list_name is not None:
        workspace.settings.contact_list(list_name)
    try:
        stream = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    except OSError as error:
        raise MailerError(f"{out}: cannot write ({error.strerror})") from None
    with workspace.engine.connect() as connection:
        count = export_contacts(connection, stream, list_name)
    if out:
        stream.close()
        warn(f"{count} contacts written to {out}")
