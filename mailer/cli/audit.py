"""`mailer audit ...`: an auditor's questions about what was sent: which consent allowed one
message, whether every message of a period had one, and a report for a compliance review."""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mailer.cli import (
    _LazyWorkspace,
    cli,
    console,
    moment_option,
    pass_workspace,
    print_json,
    say,
    warn,
)
from mailer.cli.audit_page import render_report
from mailer.consent.audit import Period, SentMessage, find_message, sent_messages
from mailer.consent.audit_report import compliance_report
from mailer.workspace import Workspace

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
since_option = click.option("--since", help="From this ISO time (inclusive; UTC unless given).")
until_option = click.option("--until", help="Up to this ISO time (exclusive).")


@cli.group()
def audit() -> None:
    """Prove what was sent: message, sends, report."""


def _period(since: str | None, until: str | None) -> Period:
    return Period(moment_option(since) if since else None, moment_option(until) if until else None)


def _lists_of(workspace: Workspace) -> dict[str, str]:
    return {name: c.list_name for name, c in workspace.settings.campaigns.items()}


@audit.command()
@click.argument("reference", metavar="ID")
@json_option
@pass_workspace
def message(lazy: _LazyWorkspace, reference: str, as_json: bool) -> None:
    """Why one message was sent: to whom, by which campaign and step, when, and the ledger
    entry that allowed it with its evidence. ID is a Message-ID (with or without <>) or an
    outbox id. An erased person's message still names its entry, without personal data."""
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        found = find_message(connection, reference)
    if as_json:
        print_json(found.as_dict())
        return
    say(f"message   {found.message_id or '-'} (outbox {found.outbox_id})")
    say(f"to        {found.contact or '(erased)'}")
    say(f"campaign  {found.campaign}, step {found.step}")
    say(f"sent      {found.sent_at:%Y-%m-%d %H:%M:%S} UTC")
    consent = found.consent
    if consent is None:
        say("consent   none recorded")
    else:
        say(f"consent   entry {consent.entry}: {consent.action} on {consent.list} "
            f"at {consent.occurred_at:%Y-%m-%d %H:%M} UTC, source {consent.source}")  # fmt: skip
        evidence = consent.evidence
        shown = ", ".join(f"{k}={v}" for k, v in evidence.items()) if evidence else "(none held)"
        say(f"evidence  {shown}")
    if found.problem:
        warn(f"mailer: this message should not have been sent: {found.problem}")
        sys.exit(1)


SENDS_COLUMNS = ("sent_at", "message_id", "contact", "campaign", "step", "entry", "list",
                 "action", "problem")  # fmt: skip


def _flat(found: SentMessage) -> dict[str, Any]:
    consent = found.consent
    return {
        "sent_at": found.sent_at.isoformat(),
        "message_id": found.message_id,
        "contact": found.contact,
        "campaign": found.campaign,
        "step": found.step,
        "entry": consent.entry if consent else None,
        "list": consent.list if consent else None,
        "action": consent.action if consent else None,
        "problem": found.problem,
    }


@audit.command()
@since_option
@until_option
@click.option("--campaign", help="Only this campaign's messages.")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one row per message).")
@pass_workspace
def sends(
    lazy: _LazyWorkspace, since: str | None, until: str | None, campaign: str | None,
    as_json: bool, as_csv: bool,
) -> None:  # fmt: skip
    """Every message sent in the period with the ledger entry that allowed it. Exit 1, naming
    each, when a message had none or went out after a withdrawal or suppression."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are alternatives: give one")
    workspace = lazy.get()
    period = _period(since, until)
    problems: list[SentMessage] = []
    with workspace.engine.connect() as connection:
        found = sent_messages(connection, period, campaign, _lists_of(workspace))
        if as_csv:
            writer = csv.DictWriter(sys.stdout, SENDS_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for each in found:
                writer.writerow(_flat(each))
                if each.problem:
                    problems.append(each)
        else:
            every = list(found)
            problems = [each for each in every if each.problem]
            if as_json:
                print_json([each.as_dict() | {"problem": each.problem} for each in every])
            else:
                _sends_table(every)
    for each in problems:
        name = each.message_id or f"outbox {each.outbox_id}"
        warn(f"mailer: {name} ({each.campaign}/{each.step}, {each.sent_at.isoformat()}): "
             f"{each.problem}")  # fmt: skip
    if problems:
        sys.exit(1)


def _sends_table(every: list[SentMessage]) -> None:
    table = Table()
    table.add_column("sent", no_wrap=True)
    table.add_column("message", overflow="fold")  # whole: an auditor copies it
    for column in ("to", "campaign / step", "entry", "problem"):
        table.add_column(column)
    for each in every:
        consent = each.consent
        allowed = f"{consent.entry} {consent.action} {consent.list}" if consent else "-"
        table.add_row(f"{each.sent_at:%Y-%m-%d %H:%M}", each.message_id or str(each.outbox_id),
                      each.contact or "(erased)", f"{each.campaign} / {each.step}", allowed,
                      each.problem or "")  # fmt: skip
    console.print(table)
    say(f"{len(every)} messages sent")


@audit.command()
@since_option
@until_option
@click.option("--checkpoint", "kept", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A checkpoint kept elsewhere (`consent checkpoint`): checked, and the latest "
                   "shown. Repeatable.")  # fmt: skip
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the report as one self-contained HTML file.")  # fmt: skip
@json_option
@pass_workspace
def report(
    lazy: _LazyWorkspace, since: str | None, until: str | None, kept: tuple[Path, ...],
    html_file: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """A compliance review of the period: the ledger's verification and latest checkpoint,
    consents by list, source and status, withdrawals and how fast each took effect, erasures,
    and any message sent without valid consent."""
    if html_file and as_json:
        raise click.UsageError("--html and --json are alternatives: give one")
    workspace = lazy.get()
    with workspace.engine.connect() as connection:
        data = compliance_report(connection, _period(since, until), _lists_of(workspace),
                                 workspace.clock.now(), workspace.key, kept)  # fmt: skip
    if as_json:
        print_json(data)
    elif html_file:
        html_file.write_text(render_report(data), encoding="utf-8")
        say(f"report written to {html_file}")
    else:
        _report_text(data)


def _report_text(data: dict[str, Any]) -> None:
    ledger = data["ledger"]
    state = "intact" if ledger["intact"] else "BROKEN: " + "; ".join(ledger["problems"])
    say(f"ledger: {state}, {ledger['entries']} entries, head {ledger['head_hash']}")
    say(f"checkpoint: {_checkpoint_text(ledger['checkpoint'])}")
    sent = data["sends"]
    say(f"messages sent: {sent['sent']}, without valid consent: {sent['without_valid_consent']}")
    at = f"at {_short(data['consents_at'])}" if data["consents_at"] else "now"
    table = Table(title=f"consents ({at})", title_justify="left")
    for column in ("list", "source", "status", "contacts"):
        table.add_column(column)
    for row in data["consents"]:
        table.add_row(row["list"], row["source"], row["status"], str(row["contacts"]))
    console.print(table)
    table = Table(title="withdrawals", title_justify="left")
    for column in ("entry", "list", "source", "recorded", "last message before", "after"):
        table.add_column(column)
    for row in data["withdrawals"]:
        table.add_row(str(row["entry"]), row["list"], row["source"], _short(row["recorded_at"]),
                      _short(row["last_sent_before"]), str(row["messages_after"]))  # fmt: skip
    console.print(table)
    rates = data["deliverability"]
    say(f"bounces and complaints: {rates['status']}: {rates['verdict']}")
    say(f"erasures: {len(data['erasures'])}"
        + "".join(f"\n  entry {e['entry']} at {_short(e['recorded_at'])}"
                  for e in data["erasures"]))  # fmt: skip


def _checkpoint_text(checkpoint: dict[str, Any] | None) -> str:
    if checkpoint is None:
        return "no checkpoint"
    held = "held" if checkpoint["problem"] is None else f"NOT HELD: {checkpoint['problem']}"
    return (f"{checkpoint['file']} of {_short(checkpoint['at'])}, "
            f"{checkpoint['entries']} entries, {held}")  # fmt: skip


def _short(moment: str | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromisoformat(moment).strftime("%Y-%m-%d %H:%M")
