"""`mailer doctor`: will receivers trust our mail? DNS and the bulk-sender checklist."""

from __future__ import annotations

import click
from rich.table import Table

from mailer.cli import _LazyWorkspace, cli, console, pass_workspace, print_json
from mailer.config import load_settings
from mailer.doctor.checks import diagnose
from mailer.doctor.findings import worst
from mailer.doctor.lookup import Lookup, resolver_for

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option(
    "--nameserver",
    metavar="HOST[:PORT]",
    help="Ask this DNS server instead of the system's resolver.",
)
@pass_workspace
def doctor(lazy: _LazyWorkspace, as_json: bool, nameserver: str | None) -> None:
    """Check the sending domain before the first send: SPF authorises the relay, the DKIM key
    in DNS matches ours, DMARC has a policy and an aligned From, MX, the tracking host's
    address, and Gmail's, Yahoo's and Microsoft's bulk-sender rules. Each finding is ok, warn
    or fail with the fix; exit status 1 when any fails."""
    settings = load_settings(lazy.config_path)  # no database: DNS and settings only
    findings = diagnose(settings, Lookup(resolver_for(nameserver)))
    if as_json:
        print_json([finding.as_dict() for finding in findings])
    else:
        table = Table("check", "status", "detail", "fix")
        for finding in findings:
            status = f"[{_STYLE[finding.status]}]{finding.status}[/]"
            table.add_row(finding.name, status, finding.detail, finding.fix)
        console.print(table)
    if worst(findings) == "fail":
        raise SystemExit(1)
