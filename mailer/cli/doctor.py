"""`mailer doctor`: will receivers trust our mail? DNS and the bulk-sender checklist."""

from __future__ import annotations

from datetime import datetime

import click
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from mailer.check import existing_database
from mailer.cli import _LazyWorkspace, cli, console, pass_workspace, print_json
from mailer.clock import clock_from_environment
from mailer.config import Settings, load_settings
from mailer.consent.audit import Period
from mailer.doctor.checks import RATE_PERIOD, diagnose
from mailer.doctor.findings import worst
from mailer.doctor.lookup import Lookup, resolver_for
from mailer.returns.rates import Rates, period_rates

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
    settings = load_settings(lazy.config_path)  # no secret key: DNS, settings, and rates
    now = (lazy.clock or clock_from_environment()).now()
    findings = diagnose(settings, Lookup(resolver_for(nameserver)), _recent_rates(settings, now))
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


def _recent_rates(settings: Settings, now: datetime) -> Rates | None:
    """The sender's bounce and complaint rates over the last RATE_PERIOD, from the database
    when it exists (the doctor never creates one); None without it."""
    engine = existing_database(settings)
    if engine is None:
        return None
    try:
        with engine.connect() as connection:
            return period_rates(connection, Period(now - RATE_PERIOD, None))
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
