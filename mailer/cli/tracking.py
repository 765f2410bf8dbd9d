"""`mailer serve`: the tracking endpoint on its own."""

from __future__ import annotations

import click

from mailer.cli import _LazyWorkspace, cli, pass_workspace, say
from mailer.tracking.serve import listen
from mailer.tracking.serve import serve as serve_endpoint


@cli.command()
@click.option("--host", help="The address to listen on (default: tracking.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535),
              help="The port (default: tracking.port, 8025).")  # fmt: skip
@click.option("--now", "now_text", metavar="ISO-TIME",
              help="Start the clock at this time (UTC when no offset is given); it runs on from "
                   "there. Also MAILER_NOW, for every command.")  # fmt: skip
@pass_workspace
def serve(lazy: _LazyWorkspace, host: str | None, port: int | None, now_text: str | None) -> None:
    """The tracking endpoint: open pixel (/o/), click redirects (/c/), unsubscribe page and
    RFC 8058 one-click unsubscribe (/u/), the website's events API (/events), /healthz and
    /metrics. Put it behind your https proxy at tracking.base_url. `mailer run` serves it
    too. SIGTERM or Ctrl-C: requests in flight finish, buffered opens and clicks are
    written, exit 0."""
    lazy.start_clock_at(now_text)
    workspace = lazy.get()
    _ = workspace.engine  # opened first: a database it cannot use is said before "listening"
    tracking = workspace.settings.tracking
    listening = listen(workspace, host, port,
                       fix="choose another port with --port (or tracking.port)")  # fmt: skip
    say(f"mailer serve: http://{host or tracking.host}:{port or tracking.port} "
        f"(links in messages point at {tracking.base_url})")  # fmt: skip
    serve_endpoint(workspace, listening)
