"""`mailer consent ...`: what an auditor asks of the ledger and of one person."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.table import Table

from mailer.cli import (
    _LazyWorkspace,
    cli,
    console,
    pass_workspace,
    print_json,
    say,
    warn,
)
from mailer.consent import checkpoints
from mailer.consent.evidence import evidence
from mailer.consent.ledger import verify as verify_chain
from mailer.consent.ledger_key import key_of
from mailer.consent.person import (
    consent_history,
    consent_overview,
    erase_person,
    export_person,
    find_person,
    grant,
    lift_suppression,
    withdraw,
)
from mailer.consent.verification import verify_ledger
from mailer.tracking.confirmation import CONFIRM_VALID, ConfirmationMail
from mailer.tracking.forms import Lead, asked_again
from mailer.webhooks_out import WebhookEvent, enqueue

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
reason_option = click.option("--reason", help="Why, in a few words (kept as the evidence).")
reference_option = click.option("--reference", help="The request's ticket number (evidence).")


@cli.group()
def consent() -> None:
    """The consent ledger: show, history, withdraw, verify, export, erase."""


@consent.command()
@click.argument("email")
@json_option
@pass_workspace
def show(lazy: _LazyWorkspace, email: str, as_json: bool) -> None:
    """Consent of EMAIL per list (none, pending, granted, confirmed, withdrawn), since when, the
    ledger entry that decided it, and whether the address is suppressed."""
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        overview = consent_overview(
            connection, workspace.key, email, list(workspace.settings.lists)
        )
    if as_json:
        print_json(overview.as_dict())
        return
    table = Table(title=overview.email, title_justify="left")
    for column in ("list", "status", "since", "entry"):
        table.add_column(column)
    for row in overview.lists:
        since = row.since.strftime("%Y-%m-%d %H:%M UTC") if row.since else ""
        table.add_row(row.list, row.status, since, str(row.entry_id or ""))
    console.print(table)
    if overview.suppression:
        say(f"suppressed: {overview.suppression.reason} since "
                      f"{overview.suppression.since:%Y-%m-%d %H:%M} UTC "
                      f"(entry {overview.suppression.entry_id or '-'})")  # fmt: skip
    else:
        say("not suppressed")


@consent.command()
@click.argument("email")
@json_option
@pass_workspace
def history(lazy: _LazyWorkspace, email: str, as_json: bool) -> None:
    """Every ledger entry about EMAIL, oldest first, with its evidence."""
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        entries = consent_history(connection, workspace.key, email)
    if as_json:
        print_json(entries)
        return
    table = Table()
    for column in ("entry", "occurred", "list", "action", "source", "evidence"):
        table.add_column(column)
    for entry in entries:
        evidence = entry["evidence"] or {}
        shown = ", ".join(f"{k}={v}" for k, v in evidence.items())
        shown = "(erased)" if entry["evidence_erased"] else shown
        table.add_row(str(entry["entry_id"]), entry["occurred_at"][:16].replace("T", " "),
                      entry["list"], entry["action"], entry["source"], shown)  # fmt: skip
    console.print(table)


@consent.command("withdraw")
@click.argument("email")
@click.option("--list", "list_name", help="Withdraw this list only (default: every list, and "
                                          "suppress the address).")  # fmt: skip
@reason_option
@reference_option
@json_option
@pass_workspace
def withdraw_command(
    lazy: _LazyWorkspace, email: str, list_name: str | None, reason: str | None,
    reference: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Record that EMAIL withdrew consent (on one list, or on all and is suppressed)."""
    workspace = lazy.get()
    if list_name is not None:
        workspace.settings.contact_list(list_name)
    now = workspace.clock.now()
    said = evidence(now, via="cli", reason=reason, reference=reference)
    with workspace.engine.begin() as connection:
        ids = withdraw(connection, workspace.key, email, workspace.double_opt_in, now, list_name,
                       evidence=said)  # fmt: skip
        if ids:  # a CRM that mirrors opt-outs hears of this one as of a click on unsubscribe
            person = find_person(connection, workspace.key, email)
            enqueue(connection, workspace.settings, "unsubscribed", [
                WebhookEvent(now, contact_id=person.contact_id, email=person.email,
                             data={"list": list_name, "via": "operator"})])  # fmt: skip
    if as_json:
        print_json({"entries": ids, "suppressed": list_name is None})
    elif not ids:
        say("already withdrawn: nothing recorded")
    else:
        scope = f"list {list_name}" if list_name else "every list; address suppressed"
        say(f"withdrawn: {scope} (ledger entries {', '.join(map(str, ids))})")


@consent.command("grant")
@click.argument("email")
@click.option("--list", "list_name", required=True, help="The list consent was given for.")
@reason_option
@reference_option
@json_option
@pass_workspace
def grant_command(
    lazy: _LazyWorkspace, email: str, list_name: str, reason: str | None,
    reference: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Record consent EMAIL gave outside mailer (by phone, on paper) for one list, with the
    evidence: --reason and/or --reference (a grant without evidence is not consent)."""
    if not (reason or reference):
        raise click.UsageError("say where the consent comes from: --reason and/or --reference")
    workspace = lazy.get()
    workspace.settings.contact_list(list_name)
    now = workspace.clock.now()
    said = evidence(now, via="cli", reason=reason, reference=reference)
    with workspace.engine.begin() as connection:
        entry_id = grant(connection, workspace.key, email, list_name, workspace.double_opt_in,
                         now, said)  # fmt: skip
    if as_json:
        print_json({"entry": entry_id})
    elif entry_id is None:
        say(f"nothing to record: {email} already has consent on list {list_name}")
    else:
        say(f"granted: list {list_name} (ledger entry {entry_id})")


@consent.command("lift")
@click.argument("email")
@reason_option
@reference_option
@click.option("--ask", "ask_list", metavar="LIST",
              help="Then email the person LIST's confirmation link (the double opt-in email): "
                   "their click re-subscribes them, with the click as evidence.")  # fmt: skip
@json_option
@pass_workspace
def lift_command(lazy: _LazyWorkspace, email: str, reason: str | None, reference: str | None,
                 ask_list: str | None, as_json: bool) -> None:  # fmt: skip
    """Lift the suppression of EMAIL (a hard bounce, a complaint, an opt-out of all mail) when
    the person asks to come back, saying how they asked: --reason and/or --reference. Nothing
    is granted: they opt in again, on the sign-up form or with --ask's email. An erasure is
    never lifted."""
    if not (reason or reference):
        raise click.UsageError("say how the person asked to come back: --reason and/or "
                               "--reference")  # fmt: skip
    workspace = lazy.get()
    if ask_list is not None and ask_list not in workspace.settings.lists:
        raise click.UsageError(f"--ask {ask_list}: no such list in settings")
    now = workspace.clock.now()
    said = evidence(now, via="cli", reason=reason, reference=reference)
    with workspace.engine.begin() as connection:
        entry_id = lift_suppression(connection, workspace.key, email, now, said)
        # Checked before the lift commits: a person --ask cannot ask keeps the suppression.
        asked = asked_again(connection, workspace.key, email, ask_list) if ask_list else None
    sent = None
    if asked is not None and ask_list is not None:
        lead = Lead(asked.email, ask_list, "operator-request", form_id="cli")
        sent = asyncio.run(ConfirmationMail(workspace).send(asked, lead, now))
    if as_json:
        print_json({"entry": entry_id} | ({"confirmation_sent": sent} if ask_list else {}))
        return
    say(f"suppression lifted (ledger entry {entry_id}); every list stays withdrawn until "
        f"{email} opts in again, e.g. on your sign-up form")  # fmt: skip
    if sent:
        say(f"confirmation email for list {ask_list} sent to {email}: its link re-subscribes "
            f"them (valid {CONFIRM_VALID.days} days)")  # fmt: skip
    elif ask_list:
        say(f"confirmation email for list {ask_list} NOT sent: the relay did not take it (the "
            "log says why); the lift stands, and they can use the sign-up form")  # fmt: skip


@consent.command()
@click.option("--checkpoint", "kept", multiple=True, type=click.Path(path_type=Path),
              help="A checkpoint kept elsewhere (`consent checkpoint`); prove the ledger still "
                   "holds it unchanged. Repeatable.")  # fmt: skip
@json_option
@pass_workspace
def verify(lazy: _LazyWorkspace, kept: tuple[Path, ...], as_json: bool) -> None:
    """Recompute the ledger's keyed hash chain and its sealed head, replay it into consent
    status and suppressions, and check each --checkpoint: exit 0 with the count, or 1 naming
    every entry, row or checkpoint that disagrees.
    """
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        report = verify_ledger(connection, workspace.key, list(kept))
    chain = report.chain
    if as_json:
        print_json(report.as_dict())
    elif report.intact:
        keyed = "" if chain.keyed_from in (None, 1) else (
            f"; entries 1..{chain.keyed_from - 1} are from before the key (SHA-256), sealed "
            f"under it from entry {chain.keyed_from} on")  # fmt: skip
        say(f"ledger intact: {chain.entries} entries, head {chain.head_hash}{keyed}; "
            f"consent status and suppressions agree; {len(kept)} checkpoint(s) held")  # fmt: skip
    else:
        for problem in report.problems:
            warn(f"ledger broken: {problem}")
    if not report.intact:
        sys.exit(1)


@consent.command()
@click.option("--out", type=click.Path(path_type=Path), help="Write it here (default: print).")
@pass_workspace
def checkpoint(lazy: _LazyWorkspace, out: Path | None) -> None:
    """A signed statement of the ledger now (entry count, head hash, time), for an auditor to
    keep outside this database and give back to `consent verify --checkpoint`."""
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        signed = checkpoints.sign(key_of(connection), verify_chain(connection),
                                  workspace.clock.now())  # fmt: skip
    if out is None:
        print_json(signed.as_dict())
    else:
        checkpoints.write(signed, out)
        say(f"checkpoint written to {out}: {signed.entries} entries, head {signed.head}")


@consent.command("export")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, default=True, hidden=True)
@pass_workspace
def export_command(lazy: _LazyWorkspace, email: str, as_json: bool) -> None:
    """Everything held about EMAIL, as JSON (GDPR Art. 15 access, Art. 20 portability)."""
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        print_json(export_person(connection, workspace.key, email))


@consent.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@reference_option
@json_option
@pass_workspace
def erase(
    lazy: _LazyWorkspace, email: str, yes: bool, reference: str | None, as_json: bool
) -> None:
    """Erase EMAIL's personal data (GDPR Art. 17), keeping a hashed suppression.

    Deletes the contact, attributes, tags, memberships, events, enrollments and consent
    evidence; keeps their sent messages pseudonymised with the ledger entry behind each;
    appends an `erased` entry (with --reference) to the ledger (which still verifies) and
    suppresses the address by keyed hash, so the person is never mailed or imported again.
    """
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("erasing cannot be undone: pass --yes to confirm")
        click.confirm(f"Erase every personal data of {email}? This cannot be undone", abort=True)
    workspace = lazy.get()
    with workspace.engine.begin() as connection:
        entry_id = erase_person(connection, workspace.key, email, workspace.clock.now(),
                                reference)  # fmt: skip
    if as_json:
        print_json({"erased": True, "entry_id": entry_id})
    else:
        say(f"erased; ledger entry {entry_id}; the address stays suppressed (hashed)")
