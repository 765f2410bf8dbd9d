"""`mailer sink`: a local SMTP server that keeps every message it receives as an .eml file in a
folder, so a campaign can be tried end to end without a relay. Nothing leaves the machine.

File names sort by arrival: `20261123T101500Z-000001-3fa9c2.eml` (UTC time, a running number,
a random suffix so that two sinks, or a restart, never overwrite a file). A message for several
recipients becomes one file each, `...-3fa9c2.1.eml`, `...-3fa9c2.2.eml`, as a mailbox would
hold it: with `Return-Path` and `Delivered-To` on top.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path
from types import FrameType

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.contacts.cells import printable
from mailer.errors import MailerError
from mailer.listening import address, bind, cannot_listen, sleep_until

MAX_MESSAGE_BYTES = 50 * 1024 * 1024
SUBJECT_WIDTH = 70
WHO, FIX = "another mailer sink?", "choose another port with --port"

Echo = Callable[[str], None]


class SentFolder:
    """The aiosmtpd handler: accepts every message, writes it to the folder, echoes a line."""

    def __init__(self, directory: Path, echo: Echo) -> None:
        self.directory = directory
        self.echo = echo
        self.kept = 0
        self._numbers = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        queue_id = self._queue_id()
        recipients = envelope.rcpt_tos
        for index, recipient in enumerate(recipients, start=1):
            name = f"{queue_id}.eml" if len(recipients) == 1 else f"{queue_id}.{index}.eml"
            self._write(name, trace_headers(envelope.mail_from, recipient) + content)
        self.kept += len(recipients)
        subject = printable(subject_line(content))
        moment = datetime.now().strftime("%H:%M:%S")  # local time: for the person watching
        for recipient in recipients:
            # Escaped: a sender's CR, LF or ESC must not forge a line or move the terminal.
            self.echo(f"{moment}  {printable(recipient)}  {subject}")
        return f"250 OK: queued as {queue_id}"

    def _queue_id(self) -> str:
        moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{moment}-{next(self._numbers):06d}-{secrets.token_hex(3)}"

    def _write(self, name: str, content: bytes) -> None:
        # Written under a dot name, then renamed: a folder watcher never sees half a message.
        partial = self.directory / f".{name}.part"
        partial.write_bytes(content)
        os.replace(partial, self.directory / name)


def trace_headers(sender: str | None, recipient: str) -> bytes:
    """The lines a delivery agent puts on top of a message it files (RFC 5321 4.4)."""
    reverse_path = "" if sender in (None, "<>") else sender
    lines = f"Return-Path: <{reverse_path}>\r\nDelivered-To: {recipient}\r\n"
    # aiosmtpd decodes SMTPUTF8 addresses with surrogateescape: this gives the original bytes.
    return lines.encode("utf-8", "surrogateescape")


def subject_line(content: bytes) -> str:
    """The decoded Subject on one line, shortened to fit a terminal line."""
    headers = BytesHeaderParser(policy=default).parsebytes(content)
    subject = " ".join(str(headers["subject"] or "").split())
    if not subject:
        return "(no subject)"
    return subject if len(subject) <= SUBJECT_WIDTH else subject[: SUBJECT_WIDTH - 1] + "…"


def start_sink(host: str, port: int, directory: Path, echo: Echo) -> Controller:
    """The sink, listening in a thread of its own; `.stop()` it when done."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MailerError(f"cannot create the folder {directory}: {error.strerror}; "
                          "choose another with --dir") from None  # fmt: skip
    # aiosmtpd's Controller reports a taken port only after its 5-second start timeout.
    bind(host, port, who=WHO, fix=FIX).close()
    controller = Controller(
        SentFolder(directory, echo),
        hostname=host,
        port=port,
        server_hostname="localhost",  # the default asks DNS for this machine's name
        ident="mailer sink",
        data_size_limit=MAX_MESSAGE_BYTES,
        enable_SMTPUTF8=True,
    )
    try:
        controller.start()
    except OSError as error:  # taken between the check and now
        raise MailerError(cannot_listen(host, port, error, WHO, FIX)) from None
    return controller


def serve_sink(host: str, port: int, directory: Path, echo: Echo) -> None:
    """Run the sink until SIGINT (Ctrl-C) or SIGTERM, then stop it and return."""
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        controller = start_sink(host, port, directory, echo)
        where = address(host, port)
        echo(f"mailer sink: listening on {where}, keeping every message in {directory}/ "
             "(Ctrl-C stops)")  # fmt: skip
        sleep_until(stopping)
        controller.stop()
        kept = controller.handler.kept
        echo(f"mailer sink: stopped; {kept} message{'s' * (kept != 1)} kept in {directory}/")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
