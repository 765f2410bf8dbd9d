"""`mailer db current` and `mailer db upgrade`: the database's schema, for operators who upgrade
once before restarting many daemons."""

from __future__ import annotations

import click

from mailer.cli import _LazyWorkspace, cli, pass_workspace, print_json, say
from mailer.store.engine import create_database_engine, schema_state, upgrade

BEHIND = 3  # `mailer db current --check`: an upgrade is pending (1 is an error, 2 a usage error)


@cli.group()
def db() -> None:
    """The database's schema: which migration it is at, and upgrading it.

    Every command upgrades the schema when it starts (`mailer run` and `mailer serve` too, one
    process at a time); with many daemons, run `mailer db upgrade` once, then restart them. A
    database that a newer mailer upgraded is refused by every command.
    """


@db.command()
@click.option("--check", is_flag=True,
              help=f"Exit with status {BEHIND} when an upgrade is pending.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@pass_workspace
def current(lazy: _LazyWorkspace, check: bool, as_json: bool) -> None:
    """The database's migration, the newest this mailer knows, and whether an upgrade is
    pending. Reads only: never creates or upgrades anything."""
    state = schema_state(lazy.get().settings.resolved_database_url())
    if as_json:
        print_json(state.as_dict())
    else:
        revision = state.revision or (
            "none (no database yet: `mailer db upgrade` or `mailer init` creates it)"
            if not state.exists else "none (empty database)"
        )  # fmt: skip
        say(f"database  {state.database}")
        say(f"revision  {revision}")
        say(f"newest    {state.newest} (this mailer)")
        say("upgrade pending: run `mailer db upgrade`" if state.upgrade_pending
            else "schema current")  # fmt: skip
    if check and state.upgrade_pending:
        click.get_current_context().exit(BEHIND)


@db.command("upgrade")
@pass_workspace
def upgrade_command(lazy: _LazyWorkspace) -> None:
    """Bring the schema to the newest migration (safe to run again; on PostgreSQL, processes
    that start meanwhile wait for it). Nothing else changes: lists and keys are `mailer init`'s."""
    url = lazy.get().settings.resolved_database_url()
    engine = create_database_engine(url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    shown = engine.url.render_as_string(hide_password=True)
    if before == after:
        say(f"database  {shown}: already current ({after})")
    elif before is None:
        say(f"database  {shown}: created at {after}")
    else:
        say(f"database  {shown}: upgraded from {before} to {after}")
