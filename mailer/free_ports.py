"""Whether the ports a run will listen on are free, before it starts anything:

    python -m mailer.free_ports --run "make demo" SMTP_PORT=2525 TRACKING_PORT=8025

exits 1 with `port 2525 is in use by another program: run `make demo SMTP_PORT=2526``
(a port free now) when another program holds one, and silently 0 otherwise. `make demo` runs
it first: its sink once failed to start beside another program's server on 2525, and the demo
delivered into that server and died twenty steps later.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mailer.errors import MailerError
from mailer.listening import bind

LOOPBACK = "127.0.0.1"
# How far above a port in use to look for a free one to suggest.
SEARCH = 100


def is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could listen on host:port now (bound as mailer's servers bind)."""
    try:
        bind(host, port, who="", fix="").close()
    except MailerError:
        return False
    return True


def taken_ports(ports: dict[str, int], host: str = LOOPBACK) -> dict[str, int]:
    """The variables whose port another program holds, with a free port for each to use."""
    taken = [name for name, port in ports.items() if not is_free(port, host)]
    avoid = set(ports.values())
    instead: dict[str, int] = {}
    for name in taken:
        for port in range(ports[name] + 1, min(ports[name] + SEARCH, 65535) + 1):
            if port not in avoid and is_free(port, host):
                instead[name] = port
                avoid.add(port)
                break
    return {name: instead.get(name, 0) for name in taken}


def refusal(ports: dict[str, int], run: str, host: str = LOOPBACK) -> str | None:
    """The line that stops the run when a port is taken, saying what to type instead."""
    taken = taken_ports(ports, host)
    if not taken:
        return None
    named = ", ".join(f"port {ports[name]}" + (" is in use by another program" if index == 0
                                               else " too")
                      for index, name in enumerate(taken))  # fmt: skip
    # `make demo SMTP_PORT=2525 TRACKING_PORT=8126` again, its taken port moved in place.
    moves = {name: f"{name}={port or '...'}" for name, port in taken.items()}
    words = [moves.pop(word.partition("=")[0], word) for word in run.split()]
    return f"{named}: run `{' '.join(words + list(moves.values()))}`"


def _assignment(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    if not name or not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"'{text}': write NAME=PORT, e.g. SMTP_PORT=2525")
    return name, int(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailer.free_ports", description="Exit 1, naming it, when a port is in use."
    )
    parser.add_argument("--run", default="make demo", help="The command to suggest again.")
    parser.add_argument("--host", default=LOOPBACK, help="The address the servers listen on.")
    parser.add_argument("ports", nargs="+", type=_assignment, metavar="NAME=PORT")
    options = parser.parse_args(argv)
    line = refusal(dict(options.ports), options.run, options.host)
    if line is None:
        return 0
    print(line, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
