"""A real SMTP server (aiosmtpd) on a free loopback port whose answers are scripted per
recipient, for the delivery tests: refusals at RCPT or at DATA, a connection dropped in the
middle of DATA, a slow relay, STARTTLS, implicit TLS and AUTH.

    with ScriptedSmtpServer() as server:
        server.script("ada@example.com", "451 4.3.0 Try again later")  # then 250
        ...  # deliver to server.host:server.port
        assert [r.recipient for r in server.received] == ["ada@example.com"]
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"
ACCEPT = "250"
DROP = "drop"
AT_DATA = "data "
# 250, drop, a 4xx/5xx reply line (given at RCPT), or "data " and a 4xx/5xx line (given at DATA)
_REPLY = re.compile(r"250|drop|(data )?[45]\d\d( .*)?")


@dataclass
class Received:
    """One accepted message, for one recipient."""

    envelope_from: str
    recipient: str
    data: bytes
    connection: int  # which SMTP session (1, 2, ...) carried it


class ScriptedSmtpServer:
    """An SMTP server whose replies are scripted per recipient (matched case-insensitively).

    Each reply in `script()` is used for one attempt to that recipient, then "250" forever:
    "250" accepts; "451 4.3.0 Try again later" (any 4xx/5xx line) is the answer to RCPT TO;
    "drop" accepts RCPT, reads the message, then closes the connection without answering DATA;
    "data 554 5.7.1 rejected" accepts RCPT and gives that answer to DATA.
    """

    def __init__(self, *, tls: ssl.SSLContext | None = None,
                 implicit_tls: ssl.SSLContext | None = None,
                 auth: dict[str, str] | None = None, delay: float = 0.0,
                 smtputf8: bool = True, host: str = LOOPBACK,
                 port: int | None = None) -> None:  # fmt: skip
        """tls: offer and require STARTTLS; implicit_tls: TLS from the first byte; auth:
        username -> password, required before MAIL (AUTH PLAIN and LOGIN, TLS or not);
        smtputf8: offer SMTPUTF8 (RFC 6531), as most relays do; host: the address to listen
        on (another than loopback stands for a relay across the network); port: a stopped
        server's, for the relay coming back (a stopped server cannot start again)."""
        if tls is not None and implicit_tls is not None:
            raise ValueError("give tls (STARTTLS) or implicit_tls, not both")
        self.host = host
        self.port = port or free_port(self.host)
        self.received: list[Received] = []
        self.connections = 0
        self.rsets = 0
        self.delay = delay  # seconds before each answer to DATA: makes a run slow enough to kill
        self.auth = auth
        self._scripts: dict[str, deque[str]] = {}
        self._lock = threading.Lock()  # hooks run in the server's thread, tests in theirs
        self._controller = _NumberingController(
            self,
            hostname=self.host,
            port=self.port,
            ssl_context=implicit_tls,
            server_hostname="localhost",  # the default asks DNS for this machine's name
            tls_context=tls,
            require_starttls=tls is not None,
            authenticator=self._authenticate if auth is not None else None,
            # aiosmtpd does not count implicit TLS as TLS here; loopback needs no protection.
            auth_require_tls=auth is None,
            enable_SMTPUTF8=smtputf8,
        )

    def script(self, recipient: str, *replies: str) -> None:
        """Queue the replies for the next attempts to this recipient (after any queued)."""
        for reply in replies:
            if not _REPLY.fullmatch(reply):
                raise ValueError(
                    f"{reply!r}: write 250, drop, a 4xx/5xx reply line such as "
                    "'451 4.3.0 Try again later', or 'data ' and such a line"
                )
        with self._lock:
            self._scripts.setdefault(recipient.lower(), deque()).extend(replies)

    def start(self) -> None:
        self._controller.start()
        # start() opened a connection of its own to see the server answer: not a session.
        with self._lock:
            self.connections = 0

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> ScriptedSmtpServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        self.stop()

    # aiosmtpd hooks, run in the server's thread

    def count_connection(self) -> int:
        with self._lock:
            self.connections += 1
            return self.connections

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:  # fmt: skip
        # Not aiosmtpd's auth_required: that one warns whenever TLS is not required too.
        if self.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: _Connection, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:  # fmt: skip
        reply = self._next_reply(address)
        if reply not in (ACCEPT, DROP) and not reply.startswith(AT_DATA):
            return reply
        server.data_replies[address] = reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: _Connection, session: Session,
                          envelope: Envelope) -> str:  # fmt: skip
        await asyncio.sleep(self.delay)
        replies = [server.data_replies.get(recipient, ACCEPT) for recipient in envelope.rcpt_tos]
        if DROP in replies:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            # connection_lost() cancels this coroutine, so aiosmtpd never writes an answer.
            await asyncio.get_running_loop().create_future()
        refusal = next((reply for reply in replies if reply.startswith(AT_DATA)), None)
        if refusal is not None:
            return refusal.removeprefix(AT_DATA)
        sender, data = envelope.mail_from or "", envelope.original_content or b""
        # Recorded before the answer: a client that has its 250 finds its message here.
        with self._lock:
            self.received += [Received(sender, recipient, data, server.number)
                              for recipient in envelope.rcpt_tos]  # fmt: skip
        return "250 OK: queued"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.rsets += 1
        return "250 OK"

    def _next_reply(self, recipient: str) -> str:
        with self._lock:
            replies = self._scripts.get(recipient.lower())
            return replies.popleft() if replies else ACCEPT

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, data: LoginPassword) -> AuthResult:  # fmt: skip
        assert self.auth is not None
        known = self.auth.get(data.login.decode()) == data.password.decode()
        return AuthResult(success=known, handled=False)  # failure: 535 5.7.8


class _Connection(SMTP):
    """One SMTP connection: its number, and the DATA answer scripted for each recipient."""

    def __init__(self, handler: ScriptedSmtpServer, number: int, **options: Any) -> None:
        super().__init__(handler, **options)
        self.number = number
        self.data_replies: dict[str, str] = {}


class _NumberingController(Controller):
    def factory(self) -> _Connection:
        return _Connection(self.handler, self.handler.count_connection(), **self.SMTP_kwargs)


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on now. (aiosmtpd cannot be given port 0: it connects to its own
    port to see that it started.)"""
    with socket.create_server((host, 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


def server_tls_context(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    return context


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate and its key (PEM files) for `localhost` and 127.0.0.1, valid for a day;
    the certificate is its own issuer, so a client can take it as its CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
    identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # Signs itself as a CA would (Python 3.13's strict verification wants these extensions).
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          crl_sign=False, encipher_only=False, decipher_only=False)  # fmt: skip
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(identifier, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(identifier),
            critical=False,
        )
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = folder / "localhost.crt", folder / "localhost.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path
