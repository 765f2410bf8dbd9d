"""`mailer new`, `mailer init` and `mailer check`."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from mailer.check import ROWS, check_project
from mailer.cli import (
    _LazyWorkspace,
    cli,
    pass_workspace,
    print_json,
    say,
    warn,
)
from mailer.clock import clock_from_environment
from mailer.consent.ledger import seal as seal_ledger
from mailer.consent.ledger_key import key_of
from mailer.render.spam import DEFAULT_THRESHOLD
from mailer.starter import Sender, write_starter
from mailer.store.engine import schema_is_current
from mailer.workspace import Workspace, create_dkim_key, create_secret_key

# What to run after `mailer new`, each with why: the README's "Your own campaign" in brief.
NEXT_STEPS = (
    ("mailer init", "the database and the keys, in .mailer/"),
    ("mailer check", "every message renders, footer included"),
    ("mailer import lists/newsletter.csv --list newsletter", "four sample contacts"),
    ("mailer plan", "what would be sent, and when (a dry run)"),
    ("mailer sink &", "a local mail server: .mailer/sent/"),
    ("mailer tick", "sends what is due into the sink"),
)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace the starter's files where they exist.")
@click.option("--name", default=Sender.name, show_default=True,
              help="Who the mail is from: [sender] name, the list's title, the subjects.")
@click.option("--email", default=Sender.email, show_default=True,
              help="The sending address; its domain is the DKIM domain and the reply-to's.")
@click.option("--address", default=Sender.postal_address, show_default=True,
              help="The postal address every message's footer prints.")
def new(directory: Path, force: bool, name: str, email: str, address: str) -> None:
    """Write a starter project into DIRECTORY (created when missing).

    settings.toml (every setting explained), templates/ (a layout and two messages, HTML and
    plain text), lists/newsletter.csv (four sample contacts), one sequence, one broadcast and a
    .gitignore. It checks clean and delivers into `mailer sink` as written. An existing file is
    never replaced without --force; then nothing is written.
    """
    sender = Sender(name, email, address)
    starter = write_starter(directory, clock_from_environment().now(), force=force,
                            sender=sender)  # fmt: skip
    say(f"wrote a starter project in {directory}: {len(starter.files)} files "
        "(settings.toml, templates/, lists/newsletter.csv, .gitignore)")  # fmt: skip
    say("next:")
    steps = ([(f"cd {shlex.quote(str(directory))}", "")]
             if directory.resolve() != Path.cwd() else []) + [*NEXT_STEPS]  # fmt: skip
    width = max(len(command) for command, _ in steps)
    for command, why in steps:
        say(f"  {command:<{width}}  # {why}" if why else f"  {command}")


@cli.command()
@pass_workspace
def init(lazy: _LazyWorkspace) -> None:
    """Create the database (or upgrade its schema) and the secret key.

    Safe to run again: an existing key is never replaced, and the schema is only upgraded. Every
    other command also upgrades the schema on start, so `init` is needed once per folder, for
    the key.
    """
    workspace = lazy.get()
    settings = workspace.settings
    created = create_secret_key(settings)
    dkim = create_dkim_key(settings)
    engine = workspace.engine
    say(f"database  {engine.url.render_as_string(hide_password=True)}  (schema current: "
                  f"{schema_is_current(engine)})")  # fmt: skip
    if created:
        say(f"secret key written to {created} (keep it: it hashes suppressed "
                      "addresses; losing it lets erased people be imported again)")  # fmt: skip
    else:
        workspace.key  # noqa: B018  (fails here, with the fix, when no key is set)
        say("secret key  present")
    say(f"lists     {', '.join(sorted(workspace.list_ids)) or 'none'}")
    with engine.begin() as connection:
        sealed = seal_ledger(connection)
        public_key = key_of(connection).public_text
    if sealed.problem:
        warn(f"consent ledger NOT sealed: {sealed.problem}")
    else:
        say(f"ledger    {sealed.entries} entries, keyed from entry {sealed.keyed_from}")
    say(f"ledger checkpoint public key {public_key} (give it to your auditor: it checks the "
        "signature of every `mailer consent checkpoint`)")  # fmt: skip
    if dkim is not None and settings.dkim is not None:
        path, record = dkim
        say(f"DKIM key written to {path}; publish this TXT record at "
            f"{settings.dkim.selector}._domainkey.{settings.dkim.domain}:")  # fmt: skip
        say(f"  {record}")


@cli.command()
@click.option("--strict", is_flag=True,
              help="Treat rows an import would reject, and messages that fail only for a "
                   "contact with nothing but an email address, as errors.")  # fmt: skip
@click.option("--rows", default=ROWS, show_default=True, type=click.IntRange(min=0),
              help="Render every message for this many rows of each list file.")  # fmt: skip
@click.option("--spam", is_flag=True,
              help="Score every message with SpamAssassin's local rules (it must be "
                   "installed); a score at or above --spam-threshold is an error.")  # fmt: skip
@click.option("--spam-threshold", default=DEFAULT_THRESHOLD, show_default=True, type=float,
              help="The SpamAssassin score a message must stay under, with --spam.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@pass_workspace
def check(lazy: _LazyWorkspace, strict: bool, rows: int, spam: bool, spam_threshold: float,
          as_json: bool) -> None:  # fmt: skip
    """Validate settings, templates and list files; exit 1 on any error.

    Errors name the file and line. Every message (steps and variants) is rendered for the first
    --rows rows of its list's file and for a contact with only an email address: a template
    that fails for a row is an error naming it (`templates/x.html:3: ... (contact
    bob@example.com from lists/leads.csv:12; ...)`). Rows an import would skip (bad address,
    wrong column count), and failures only of the email-only contact, are warnings unless
    --strict.

    --spam scores each message (its shortest render), and the confirmation email of each double
    opt-in list, with SpamAssassin's local rules, no network tests, and names the rules that
    fired for any at or above --spam-threshold.
    """
    workspace: Workspace = lazy.get()
    threshold = spam_threshold if spam else None
    report = check_project(workspace.settings, workspace.clock.now(), strict, rows, threshold)
    if as_json:
        print_json({
            "ok": not report.errors, "templates": report.templates, "list_rows": report.list_rows,
            "messages": report.messages, "renders": report.renders,
            "problems": [{"severity": p.severity, "message": p.message} for p in report.problems],
            **({"spam": [{"message": where, "score": score.score, "rules": score.rules}
                         for where, score in report.spam]} if spam else {}),
        })  # fmt: skip
    else:
        for problem in report.problems:
            warn(f"{problem.severity}: {problem.message}")
        settings = workspace.settings
        summary = (f"{len(settings.campaigns)} campaigns, {len(settings.lists)} lists, "
                   f"{report.templates} templates, {report.messages} messages rendered "
                   f"{report.renders} times, "
                   f"{report.list_rows} list rows")  # fmt: skip
        if report.spam:
            where, worst = max(report.spam, key=lambda scored: scored[1].score)
            say(f"spam: {len(report.spam)} messages scored by SpamAssassin, the highest "
                f"{worst.score:g} ({where}; threshold {spam_threshold:g})")  # fmt: skip
        if report.errors:
            warn(f"check failed: {len(report.errors)} errors ({summary})")
        else:
            say(f"ok: {summary}")
    if report.errors:
        raise SystemExit(1)
