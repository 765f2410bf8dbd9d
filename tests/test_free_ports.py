"""`python -m mailer.free_ports`, which `make demo` runs first: a port another program holds
stops the demo at once, naming the port and the variable that moves it."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.delivery.smtp_server import free_port


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailer.free_ports", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_free_ports_pass_silently() -> None:
    result = check("--run", "make demo", f"SMTP_PORT={free_port('127.0.0.1')}")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_port_in_use_is_named_with_the_variable_that_moves_it(taken: int) -> None:
    tracking = free_port("127.0.0.1")
    result = check("--run", "make demo", f"SMTP_PORT={taken}", f"TRACKING_PORT={tracking}")
    assert result.returncode == 1
    found = re.fullmatch(rf"port {taken} is in use by another program: run "
                         r"`make demo SMTP_PORT=(\d+)`\n", result.stderr)  # fmt: skip
    assert found is not None, result.stderr
    suggested = int(found.group(1))
    assert suggested not in (taken, tracking)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", suggested))  # the suggestion was free when it was made


def test_every_port_in_use_is_named_at_once(taken: int) -> None:
    with socket.socket() as another:
        another.bind(("127.0.0.1", 0))
        another.listen()
        second = another.getsockname()[1]
        result = check("--run", "make demo", f"SMTP_PORT={taken}", f"TRACKING_PORT={second}")
    assert result.returncode == 1
    assert re.fullmatch(rf"port {taken} is in use by another program, port {second} too: run "
                        r"`make demo SMTP_PORT=\d+ TRACKING_PORT=\d+`\n",
                        result.stderr), result.stderr  # fmt: skip


def test_a_malformed_port_is_a_usage_error() -> None:
    result = check("--run", "make demo", "SMTP_PORT=twenty")
    assert result.returncode == 2
    assert "SMTP_PORT=twenty" in result.stderr


def test_the_suggestion_keeps_the_ports_given_and_moves_the_one_taken(taken: int) -> None:
    given = free_port("127.0.0.1")
    result = check("--run", f"make demo TRACKING_PORT={given} SMTP_PORT={taken} ",
                   f"SMTP_PORT={taken}", f"TRACKING_PORT={given}")  # fmt: skip
    assert result.returncode == 1
    assert re.fullmatch(rf"port {taken} is in use by another program: run "
                        rf"`make demo TRACKING_PORT={given} SMTP_PORT=\d+`\n",
                        result.stderr), result.stderr  # fmt: skip
