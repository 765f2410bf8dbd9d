"""Serving the tracking endpoint with uvicorn: alone (`mailer serve`), or inside `mailer run`
beside delivery, in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from mailer.delivery.worker import run_loop
from mailer.listening import bind
from mailer.tracking import apple
from mailer.tracking.app import create_app
from mailer.workspace import Workspace


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the daemon, which stops it on SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# How uvicorn serves the endpoint (bench/bare_pixel.py serves its floor the same way). No
# access log: at level warning none of its lines is written, yet uvicorn would still format
# each request's client and path for it (~1.4 µs a request).
OPTIONS: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "lifespan": "on",
                           "log_level": "warning", "access_log": False,
                           "proxy_headers": True}  # fmt: skip


def configure(workspace: Workspace, host: str | None, port: int | None) -> uvicorn.Config:
    tracking = workspace.settings.tracking
    return uvicorn.Config(create_app(workspace), host=host or tracking.host,
                          port=port or tracking.port, **OPTIONS)  # fmt: skip


def listen(workspace: Workspace, host: str | None, port: int | None, fix: str) -> socket.socket:
    """The endpoint's socket (tracking.host and .port unless given), bound before uvicorn
    starts: a port in use is a MailerError saying `fix`, not uvicorn's exit inside a loop. So
    is an Apple ranges file that cannot be read, before anything is bound."""
    apple.of_settings(workspace.settings)
    tracking = workspace.settings.tracking
    return bind(host or tracking.host, port or tracking.port,
                who="another mailer serve or mailer run?", fix=fix)  # fmt: skip


def serve(workspace: Workspace, listening: socket.socket) -> None:
    """Serve on `listening` until SIGTERM or Ctrl-C; then finish the requests in flight,
    write the opens and clicks still buffered, and return."""
    host, port = listening.getsockname()[:2]
    serve_until_signalled(configure(workspace, host, port), [listening])


def serve_until_signalled(config: uvicorn.Config,
                          sockets: list[socket.socket] | None = None) -> None:  # fmt: skip
    """Run `config`'s server (on `sockets`, when bound already) until SIGTERM or SIGINT, then
    stop it gracefully and return (exit status 0: uvicorn's own handling would re-raise the
    signal)."""
    server = EmbeddedServer(config)

    async def until_signalled() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, setattr, server, "should_exit", True)
        await server.serve(sockets=sockets)

    run_loop(until_signalled())
