"""The sockets mailer's servers listen on (`mailer serve`, `mailer run`, `mailer sink`), bound
before the server starts: a port in use is one line saying what to do, not a traceback from
inside uvicorn or aiosmtpd."""

from __future__ import annotations

import errno
import socket
import threading
import time

from mailer.errors import MailerError


def bind(host: str, port: int, *, who: str, fix: str) -> socket.socket:
    """A TCP socket bound to host:port, for the server to listen on; MailerError when it cannot
    be had, guessing `who` holds a port in use and saying `fix` (e.g. "choose another port
    with --port")."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as error:
        raise MailerError(cannot_listen(host, port, error, who, fix)) from None
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As asyncio and uvicorn do: a restart does not wait for the old connections' TIME_WAIT.
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise MailerError(cannot_listen(host, port, error, who, fix)) from None
    return listening


def cannot_listen(host: str, port: int, error: OSError, who: str, fix: str) -> str:
    where = address(host, port)
    if error.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the port is in use ({who}); stop that program or {fix}"
    if error.errno == errno.EACCES:
        return (f"cannot listen on {where}: permission denied (ports below 1024 need root); "
                f"{fix}")  # fmt: skip
    return f"cannot listen on {where}: {error.strerror or error}; check the address, or {fix}"


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sleep_until(stopping: threading.Event, step: float = 0.2) -> None:
    """Return once `stopping` is set by a SIGINT or SIGTERM handler. Sleeps in short steps
    instead of `stopping.wait()`: the kernel may hand the signal to another thread (aiosmtpd's,
    a worker's), which only marks it for Python's main thread, and a main thread blocked on a
    lock never looks (`mailer inbound` hung so, now and then, under load); a sleep returns, and
    the handler runs."""
    while not stopping.is_set():
        time.sleep(step)
