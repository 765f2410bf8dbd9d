"""`mailer sink` keeps every message it receives as an .eml file and says so, one line each."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from mailer.delivery.sink import start_sink, subject_line
from tests.delivery.smtp_server import LOOPBACK, free_port

SENDER = "news@acme.example"
GREETING = (
    b"From: Acme Coffee <news@acme.example>\r\n"
    b"To: ada@example.com\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\n"
    b"\r\n"
    b"Hello Ada,\r\n"
    b".a line that starts with a dot survives the SMTP dot-stuffing\r\n"
)
UTF8_RECIPIENT = "jürgen@bücher.example"
UTF8_MESSAGE = (
    "From: news@acme.example\r\n"
    f"To: {UTF8_RECIPIENT}\r\n"
    "Subject: Grüße, Jürgen\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Schöne Grüße\r\n"
).encode()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[Controller, Path, list[str]]]:
    lines: list[str] = []
    folder = tmp_path / "sent"
    controller = start_sink(LOOPBACK, free_port(), folder, lines.append)
    yield controller, folder, lines
    controller.stop()


def send(port: int, recipients: list[str], message: bytes, *options: str) -> str:
    async def run() -> str:
        async with aiosmtplib.SMTP(hostname=LOOPBACK, port=port, local_hostname="localhost",
                                   start_tls=False) as client:  # fmt: skip
            _, answer = await client.sendmail(SENDER, recipients, message, mail_options=options)
            return answer

    return asyncio.run(run())


def test_each_message_is_kept_with_trace_headers_and_echoed(
    sink: tuple[Controller, Path, list[str]],
) -> None:
    controller, folder, lines = sink
    answer = send(controller.port, ["ada@example.com"], GREETING)
    send(controller.port, [UTF8_RECIPIENT], UTF8_MESSAGE, "SMTPUTF8", "BODY=8BITMIME")

    first, second = sorted(folder.glob("*.eml"))
    assert answer == f"OK: queued as {first.stem}"
    assert first.read_bytes() == (
        b"Return-Path: <news@acme.example>\r\nDelivered-To: ada@example.com\r\n" + GREETING
    )
    assert second.read_bytes() == (
        f"Return-Path: <news@acme.example>\r\nDelivered-To: {UTF8_RECIPIENT}\r\n".encode()
        + UTF8_MESSAGE
    )
    assert re.fullmatch(r"\d{2}:\d{2}:\d{2}  ada@example.com  Grüße aus Köln", lines[0])
    assert re.fullmatch(rf"\d{{2}}:\d{{2}}:\d{{2}}  {UTF8_RECIPIENT}  Grüße, Jürgen", lines[1])


def test_a_message_for_two_recipients_is_kept_once_for_each(
    sink: tuple[Controller, Path, list[str]],
) -> None:
    controller, folder, lines = sink
    answer = send(controller.port, ["ada@example.com", "bob@example.com"], GREETING)
    queue_id = answer.removeprefix("OK: queued as ")
    files = sorted(folder.glob("*.eml"))
    assert [file.name for file in files] == [f"{queue_id}.1.eml", f"{queue_id}.2.eml"]
    assert [file.read_bytes().split(b"\r\n")[1] for file in files] == [
        b"Delivered-To: ada@example.com",
        b"Delivered-To: bob@example.com",
    ]
    assert [line.split("  ")[1] for line in lines] == ["ada@example.com", "bob@example.com"]


def test_file_names_sort_in_order_of_arrival(sink: tuple[Controller, Path, list[str]]) -> None:
    controller, folder, _ = sink
    answers = [send(controller.port, ["ada@example.com"], GREETING) for _ in range(3)]
    names = [file.stem for file in sorted(folder.glob("*.eml"))]
    assert names == [answer.removeprefix("OK: queued as ") for answer in answers]


def test_subject_is_one_line_and_shortened() -> None:
    folded = b"Subject: Autumn beans\r\n  are here,\r\n\tand more " + b"x" * 80 + b"\r\n\r\n"
    line = subject_line(folded)
    assert line.startswith("Autumn beans are here, and more xxx")
    assert len(line) == 70 and line.endswith("…")
    assert subject_line(b"From: a@example.com\r\n\r\nno subject") == "(no subject)"


def test_cli_keeps_a_message_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "mailer", "sink", "--port", str(port), "--dir", "mail"],
        cwd=tmp_path,  # no settings.toml, no database: the sink needs neither
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        first = sink.stdout.readline()
        assert first.startswith(f"mailer sink: listening on 127.0.0.1:{port}, ")
        assert "mail/" in first
        send(port, ["ada@example.com"], GREETING)
        assert "ada@example.com  Grüße aus Köln" in sink.stdout.readline()
        sink.send_signal(signal.SIGTERM)
        rest, errors = sink.communicate(timeout=30)
    finally:
        sink.kill()
    assert sink.returncode == 0, errors
    assert rest == "mailer sink: stopped; 1 message kept in mail/\n"
    (kept,) = (tmp_path / "mail").glob("*.eml")
    assert kept.read_bytes().endswith(GREETING)


def test_cli_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mailer", "sink", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"mailer: cannot listen on 127.0.0.1:{port}: the port is in use (another mailer sink?); "
        "stop that program or choose another port with --port\n"
    )


def test_the_log_line_escapes_what_could_forge_a_line_or_move_the_terminal(
    sink: tuple[Controller, Path, list[str]],
) -> None:
    controller, _, lines = sink
    forged = "=?utf-8?q?Hi=0D=0A12:00:00__eve@example.com__Invoice?="  # CR LF, once decoded
    hostile = f"{forged} \x1b[2J\x1b]0;owned\x07 \u202eevil"  # clear screen, set title, RTL
    message = f"From: news@acme.example\r\nSubject: {hostile}\r\n\r\nbody\r\n".encode()
    send(controller.port, ["ada\u202e@example.com"], message, "SMTPUTF8")
    (line,) = lines
    assert line.split("  ", 1)[1] == (
        "ada\\u202e@example.com  Hi 12:00:00 eve@example.com Invoice \\x1b[2J\\x1b]0;owned\\x07 "
        "\\u202eevil"
    )
