"""Daily checkpoints from the daemon, and the upgrade of a ledger written before it was keyed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import select, text, update

from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.consent.ledger import entry_hash
from mailer.consent.person import withdraw
from mailer.consent.verification import verify_ledger
from mailer.daemon import checkpoint_job
from mailer.store.tables import consent_entries, ledger_head
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import run_import


def leads(workspace: Workspace, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "leads.csv",
        """
        email,consent_at
        ada@example.com,2026-03-01
        bob@example.com,2026-03-02
        cy@example.com,2026-03-03
    """,
    )
    run_import(workspace, path, "leads")


def mailer(project: Path, environ: dict[str, str], *args: str) -> Result:
    config = ["--config", str(project / "settings.toml")]
    return CliRunner().invoke(cli, [*config, *args], env=environ)


def test_the_daemon_keeps_one_signed_checkpoint_a_day(
    workspace: Workspace, tmp_path: Path, clock: FrozenClock
) -> None:
    leads(workspace, tmp_path)
    folder = tmp_path / "checkpoints"
    first = checkpoint_job(workspace, folder)
    assert first is not None and first.name == f"checkpoint-{clock.now():%Y-%m-%d}.json"
    clock.advance(timedelta(hours=5))
    assert checkpoint_job(workspace, folder) is None  # once a day
    with workspace.engine.begin() as connection:
        withdraw(
            connection,
            workspace.key,
            "cy@example.com",
            workspace.double_opt_in,
            clock.now(),
            list_name="leads",
        )
    clock.advance(timedelta(days=1))
    second = checkpoint_job(workspace, folder)
    assert second is not None and second != first
    with workspace.engine.connect() as connection:
        report = verify_ledger(connection, workspace.key, [first, second])
    assert report.intact, report.problems
    with workspace.engine.begin() as connection:  # the withdrawal goes, the head is set back
        connection.execute(
            text("UPDATE consent_status SET status = 'granted', entry_id = 3 WHERE entry_id = 4")
        )
        connection.execute(text("DELETE FROM consent_entries WHERE id = 4"))
        connection.execute(update(ledger_head).values(last_id=3))
    with workspace.engine.connect() as connection:
        report = verify_ledger(connection, workspace.key, [first, second])
    assert report.checkpoints[str(first)] is None
    assert "records 4 entries, only 3 remain" in (report.checkpoints[str(second)] or "")


def unkey(workspace: Workspace) -> None:
    """Make the ledger look as a version before the key wrote it: plain SHA-256, no seal."""
    with workspace.engine.begin() as connection:
        previous = "0" * 64
        rows = connection.execute(select(consent_entries).order_by(consent_entries.c.id)).all()
        for row in rows:
            rehashed = entry_hash({**row._mapping, "prev_hash": previous})
            connection.execute(
                update(consent_entries)
                .where(consent_entries.c.id == row.id)
                .values(prev_hash=previous, entry_hash=rehashed)
            )
            previous = rehashed
        connection.execute(
            update(ledger_head).values(last_hash=previous, keyed_from=None, head_mac=None)
        )


def test_init_seals_a_ledger_written_before_the_key(
    workspace: Workspace, tmp_path: Path, project: Path, environ: dict[str, str]
) -> None:
    leads(workspace, tmp_path)
    unkey(workspace)
    unsealed = mailer(project, environ, "consent", "verify")
    assert unsealed.exit_code == 1 and "never sealed" in unsealed.output
    initialised = mailer(project, environ, "init")
    assert "keyed from entry 4" in initialised.output, initialised.output
    with workspace.engine.begin() as connection:
        withdraw(
            connection,
            workspace.key,
            "cy@example.com",
            workspace.double_opt_in,
            workspace.clock.now(),
            list_name="leads",
        )
    sealed = mailer(project, environ, "consent", "verify")
    assert sealed.exit_code == 0, sealed.output
    assert "4 entries" in sealed.output and "entries 1..3 are from before the key" in sealed.output
    # An old, unkeyed entry rewritten with the public hash breaks the first keyed entry.
    with workspace.engine.begin() as connection:
        connection.execute(
            update(consent_entries).where(consent_entries.c.id == 3).values(purpose="newsletter")
        )
        row = connection.execute(select(consent_entries).where(consent_entries.c.id == 3)).one()
        rehashed = entry_hash(row)
        connection.execute(
            update(consent_entries).where(consent_entries.c.id == 3).values(entry_hash=rehashed)
        )
        connection.execute(
            update(consent_entries).where(consent_entries.c.id == 4).values(prev_hash=rehashed)
        )
    broken = mailer(project, environ, "consent", "verify")
    assert broken.exit_code == 1 and "entry 4" in broken.output


def test_init_refuses_to_seal_a_ledger_already_broken(
    workspace: Workspace, tmp_path: Path, project: Path, environ: dict[str, str]
) -> None:
    leads(workspace, tmp_path)
    unkey(workspace)
    with workspace.engine.begin() as connection:
        connection.execute(text("UPDATE consent_entries SET action = 'withdrawn' WHERE id = 2"))
    initialised = mailer(project, environ, "init")
    assert "NOT sealed" in initialised.output and "entry 2" in initialised.output
    with workspace.engine.connect() as connection:
        assert connection.scalar(select(ledger_head.c.keyed_from)) is None
