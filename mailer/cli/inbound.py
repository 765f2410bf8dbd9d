"""`mailer inbound`: the SMTP listener for bounces, mailto: unsubscribes and ARF reports."""

from __future__ import annotations

import click

from mailer.cli import _LazyWorkspace, cli, pass_workspace, say
from mailer.logs import configure
from mailer.returns.inbound import serve_inbound


@cli.command()
@click.option("--host", help="The address to listen on (default: [inbound] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535),
              help="The port to listen on (default: [inbound] port, 2526).")  # fmt: skip
@click.option("--log-json", is_flag=True, help="Log one JSON object a line.")
@pass_workspace
def inbound(lazy: _LazyWorkspace, host: str | None, port: int | None, log_json: bool) -> None:
    """Receive returned mail over SMTP until Ctrl-C (or SIGTERM): bounces to
    bounces+TOKEN@, mailto: unsubscribes to unsubscribe+TOKEN@ (the bounce domain) and ARF
    reports to [inbound] fbl_address; anything else is refused. Each message is on disk in
    [inbound] spool_dir before it is accepted, then acted on as `mailer bounces ingest` does;
    unparseable mail is kept in the spool's unparseable/ folder. Point your MX (or the relay's
    transport for the bounce domain) here. `mailer run` listens too when [inbound] enabled."""
    configure(log_json)
    serve_inbound(lazy.get(), host, port, say)
