"""One SMTP session with the relay (aiosmtplib), kept open for message after message.

A send never raises: every outcome, a reply or no reply at all, comes back as an SmtpReply
that `replies.judge` reads. A connection that failed or timed out is closed and opened again
for the next message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from typing import NamedTuple

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPHeloError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
)

from mailer.config import PRIMARY_RELAY, Relay, Settings, relay_key
from mailer.delivery.pipelining import Replies
from mailer.delivery.replies import SmtpReply, Stage
from mailer.errors import MailerError


def cleartext_password(smtp: Relay, name: str = PRIMARY_RELAY) -> str | None:
    """Why AUTH would send the relay password unencrypted over the network, or None: with
    `tls = "none"` aiosmtplib logs in over plain text, readable by anyone on the path."""
    if smtp.username is None or smtp.tls != "none" or is_loopback(smtp.host):
        return None
    return (f'{relay_key(name)}.tls: "none" would send the password of {smtp.username} in '
            f'clear to {smtp.host}; set tls = "starttls" (port 587) or "implicit" '
            "(port 465)")  # fmt: skip


def refuse_cleartext_password(settings: Settings) -> None:
    """MailerError, naming settings.toml, when logging in to a relay would be unencrypted."""
    for name, relay in settings.relays():
        if (refusal := cleartext_password(relay, name)) is not None:
            raise MailerError(f"{settings.source}: {refusal}")


def is_loopback(host: str) -> bool:
    """This machine: a relay on it is reached without crossing a network."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_context(settings: Settings, relay: Relay | None = None) -> ssl.SSLContext:
    """The system's trusted roots, plus the relay's ca_file for a private relay."""
    relay = relay or settings.smtp
    context = ssl.create_default_context()
    if relay.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.path(relay.ca_file)))
    return context


class Envelope(NamedTuple):
    """Who a message is from and to, as MAIL FROM and RCPT TO say it."""

    sender: str
    recipient: str
    smtputf8: bool


class RelaySession:
    def __init__(self, settings: Settings, password: str | None,
                 name: str = PRIMARY_RELAY) -> None:  # fmt: skip
        """A session with the relay `name` (see Settings.relays), logging in with `password`."""
        self.name = name
        self.relay = smtp = dict(settings.relays())[name]
        refuse_cleartext_password(settings)  # here too: no code path logs in in the clear
        context = tls_context(settings, smtp) if smtp.tls != "none" else None
        self.timeout = smtp.timeout.total_seconds()
        self.client = aiosmtplib.SMTP(
            hostname=smtp.host, port=smtp.port, timeout=self.timeout,
            use_tls=smtp.tls == "implicit", start_tls=smtp.tls == "starttls",
            tls_context=context, username=smtp.username, password=password,
            local_hostname=settings.sender.domain,
        )  # fmt: skip
        self.opened = 0  # connections made, for logs and tests
        self.dirty = False  # a transaction was left half-done: RSET before the next one
        self.replies: Replies | None = None  # the open connection's, after its greeting
        self.pipelining = False  # the relay takes MAIL, RCPT and DATA in one write
        # The next message's MAIL, RCPT and DATA, written after the last message (their
        # replies not read yet): that message's `send` reads them instead of writing them.
        self.announced: Envelope | None = None

    async def send(self, envelope_from: str, recipient: str, wire: bytes, smtputf8: bool,
                   then: Envelope | None = None) -> SmtpReply:  # fmt: skip
        """One transaction; `wire` is the message dot-stuffed and ending in ".\\r\\n".

        `then`: the message this session sends next. On a relay that offers PIPELINING its
        MAIL, RCPT and DATA go out in the same write as this message, so it takes one round
        trip instead of two (RFC 2920 3.1: message content may start a group). Its own end
        (the final dot) still waits for its `send`, after this one's result is written: the
        duplicate window stays one message a connection."""
        stage: Stage = "connect"
        refusal: SmtpReply | None = None  # the first step refused: what the relay said
        envelope = Envelope(envelope_from, recipient, smtputf8)
        announced, self.announced = self.announced, None
        if announced is not None and announced != envelope:
            # Another message is sent instead (its campaign paused, a stop, a failover): the
            # relay waits for that one's content, and only a lost connection forgets it (a
            # lone dot would deliver an empty message).
            self.client.close()
            announced = None
        try:
            if not self.client.is_connected or self.replies is None:
                await self._open()
                announced = None
            utf8 = self._utf8(smtputf8)
            if utf8 is None:
                return SmtpReply(553, "5.6.7 the relay does not offer SMTPUTF8, which this "
                                      "recipient's address needs", "rcpt")  # fmt: skip
            # One timer for the whole transaction: aiosmtplib's per-command timeouts would
            # start a task and a timer for each of the four steps.
            async with asyncio.timeout(self.timeout):
                if self.dirty:
                    reply = await self._command(b"RSET\r\n")  # RFC 5321 4.1.1.5: a clean envelope
                    if reply.code != 250:
                        self.client.close()
                        return SmtpReply(reply.code, reply.message, stage)
                    self.dirty = False
                self.dirty = True
                steps = _steps(envelope, utf8)
                if self.pipelining and announced is None:  # RFC 2920: one write, the three
                    self._write(b"".join(command for _, command, _ in steps))  # replies in order
                for stage, command, accepted in steps:
                    if not self.pipelining:
                        self._write(command)
                    reply = await self._reply()
                    if refusal is None and reply.code not in accepted:
                        refusal = SmtpReply(reply.code, reply.message, stage)
                    # Pipelined, the replies after a refusal are read too (503s, most
                    # likely), to stay in step; unless the relay is closing (421).
                    if refusal is not None and (not self.pipelining or reply.code == 421):
                        break
                if refusal is not None:
                    if reply.code == 354:  # RFC 2920 3.1: DATA taken although RCPT was not
                        self._write(b".\r\n")  # an empty message, which the relay refuses
                        await self._reply()  # or drops; dirty: RSET before the next one
                    return refusal
                # The message comes ready for the wire (render processes dot-stuffed it), so
                # it goes out as it is, not through aiosmtplib's data(), which would scan it
                # again.
                following = self._announcement(then)
                self._write(wire + following)
                reply = await self._reply()
                if following and reply.code != 421:
                    self.announced = then
            self.dirty = False
            return SmtpReply(reply.code, reply.message, stage)
        except TimeoutError:  # the relay went silent: this connection is useless now
            self.client.close()
            return refusal or SmtpReply(None, f"no answer within {self.timeout:g} s", stage)
        except SMTPResponseException as error:
            if stage == "connect":
                self.client.close()
            return SmtpReply(error.code, error.message, stage)
        except (SMTPException, OSError) as error:
            # No answer: refused, dropped, timed out. The connection is useless now.
            self.client.close()
            return refusal or SmtpReply(None, f"{type(error).__name__}: {error}", stage)

    def _announcement(self, then: Envelope | None) -> bytes:
        """MAIL, RCPT and DATA of `then`, to go after this message; none where the relay
        cannot take them so (no PIPELINING, or SMTPUTF8 needed and not offered)."""
        if then is None or not self.pipelining or (utf8 := self._utf8(then.smtputf8)) is None:
            return b""
        return b"".join(command for _, command, _ in _steps(then, utf8))

    def _utf8(self, needed: bool) -> bool | None:
        """Whether MAIL FROM asks for SMTPUTF8: when the address needs it; None when it needs
        it and the relay does not offer it."""
        if needed and not self.client.supports_extension("smtputf8"):
            return None
        return needed

    def _write(self, data: bytes) -> None:
        if self.replies is None:
            raise SMTPServerDisconnected("Server not connected")
        self.replies.write(data)

    async def _reply(self) -> SMTPResponse:
        """The relay's next reply. Read here, not through aiosmtplib's execute_command, whose
        lock, per-argument check and timeout cost the delivering process about 20 µs a
        command: the addresses carry no line break (validated at import), one timer covers
        the transaction. What it did on a reply is done here: 421 closes the connection."""
        if self.replies is None:
            raise SMTPServerDisconnected("Server not connected")
        reply = await self.replies.read()
        if reply.code == 421:  # RFC 5321 3.8: the relay is closing the channel
            self.client.close()
        return reply

    async def _command(self, line: bytes) -> SMTPResponse:
        self._write(line)
        return await self._reply()

    async def _open(self) -> None:
        """Connect (TLS and AUTH as settings say) and greet, so the extensions are known;
        then the replies are read by `Replies`, which keeps every one (see pipelining.py)."""
        self.opened += 1
        self.dirty = False
        self.replies = None
        await self.client.connect()
        if self.client.is_ehlo_or_helo_needed:
            try:
                await self.client.ehlo()
            except SMTPHeloError:
                await self.client.helo()
        transport, protocol = self.client.transport, self.client.protocol
        if transport is None or protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        self.replies = Replies(transport, protocol)
        self.pipelining = self.client.supports_extension("pipelining")

    async def close(self) -> None:
        # After an announced DATA the relay reads a QUIT as message content: just hang up.
        if self.client.is_connected and self.replies is not None and self.announced is None:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._command(b"QUIT\r\n")
            except (TimeoutError, SMTPException, OSError):
                pass
        self.client.close()
        self.replies = None
        self.announced = None


def _steps(envelope: Envelope, utf8: bool) -> tuple[tuple[Stage, bytes, tuple[int, ...]], ...]:
    """MAIL, RCPT and DATA of a transaction, each with the replies that accept it. (The
    addresses were validated at import: no need for aiosmtplib's parser, whose cost per
    message was a fifth of the delivering process's.)"""
    utf8_option = b" SMTPUTF8" if utf8 else b""
    return (
        ("mail", b"MAIL FROM:<" + envelope.sender.encode("ascii") + b">" + utf8_option
                 + b"\r\n", (250,)),
        ("rcpt", b"RCPT TO:<" + envelope.recipient.encode() + b">\r\n", (250, 251)),
        ("data", b"DATA\r\n", (354,)),
    )  # fmt: skip
