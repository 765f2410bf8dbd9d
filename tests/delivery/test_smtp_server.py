"""The scripted SMTP server does what its script says, seen from aiosmtplib as the client."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib
import pytest
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from tests.delivery.smtp_server import Received, ScriptedSmtpServer, server_tls_context

SENDER = "news@acme.example"
MESSAGE = b"From: news@acme.example\r\nTo: ada@example.com\r\nSubject: Hi\r\n\r\nHello Ada\r\n"
T = TypeVar("T")


def session(server: ScriptedSmtpServer, work: Callable[[aiosmtplib.SMTP], Awaitable[T]],
            **options: Any) -> T:  # fmt: skip
    """Open one SMTP session to the server, run `work` in it, close it."""

    async def run() -> T:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=10,
                                 local_hostname="localhost", **options)  # fmt: skip
        await client.connect()
        try:
            return await work(client)
        finally:
            client.close()

    return asyncio.run(run())


def send(server: ScriptedSmtpServer, *recipients: str, **options: Any) -> str:
    """One message in a session of its own; the server's answer to DATA."""

    async def work(client: aiosmtplib.SMTP) -> str:
        _, answer = await client.sendmail(SENDER, list(recipients), MESSAGE)
        return answer

    return session(server, work, **options)


def test_accepted_message_is_recorded_with_envelope_and_session(
    smtp_server: ScriptedSmtpServer,
) -> None:
    assert send(smtp_server, "ada@example.com") == "OK: queued"
    assert smtp_server.received == [Received(SENDER, "ada@example.com", MESSAGE, 1)]
    assert (smtp_server.connections, smtp_server.rsets) == (1, 0)


def test_each_session_is_counted_and_named_in_what_it_carried(
    smtp_server: ScriptedSmtpServer,
) -> None:
    send(smtp_server, "ada@example.com")
    send(smtp_server, "bob@example.com")
    assert [(r.recipient, r.connection) for r in smtp_server.received] == [
        ("ada@example.com", 1),
        ("bob@example.com", 2),
    ]
    assert smtp_server.connections == 2


def test_451_is_answered_to_rcpt_then_the_retry_is_accepted(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.script("Ada@Example.COM", "451 4.3.0 Try again later")

    async def twice(client: aiosmtplib.SMTP) -> str:
        with pytest.raises(SMTPRecipientsRefused) as refused:
            await client.sendmail(SENDER, ["ada@example.com"], MESSAGE)
        (error,) = refused.value.recipients
        assert (error.code, error.message) == (451, "4.3.0 Try again later")
        _, answer = await client.sendmail(SENDER, ["ada@example.com"], MESSAGE)
        return answer

    assert session(smtp_server, twice) == "OK: queued"
    assert [r.recipient for r in smtp_server.received] == ["ada@example.com"]
    assert smtp_server.rsets == 1  # aiosmtplib's sendmail sends RSET after a refusal


def test_refused_recipient_is_not_recorded_while_the_other_one_is(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.script("nobody@example.com", "550 5.1.1 No such user")

    async def work(client: aiosmtplib.SMTP) -> dict[str, tuple[int, str]]:
        errors, _ = await client.sendmail(SENDER, ["nobody@example.com", "ada@example.com"],
                                          MESSAGE)  # fmt: skip
        return {address: (reply.code, reply.message) for address, reply in errors.items()}

    assert session(smtp_server, work) == {"nobody@example.com": (550, "5.1.1 No such user")}
    assert [r.recipient for r in smtp_server.received] == ["ada@example.com"]


def test_drop_closes_the_connection_after_the_data_without_an_answer(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.script("ada@example.com", "drop")

    async def work(client: aiosmtplib.SMTP) -> None:
        await client.mail(SENDER)
        assert (await client.rcpt("ada@example.com")).code == 250
        with pytest.raises(SMTPServerDisconnected):
            await client.data(MESSAGE)
        assert not client.is_connected

    session(smtp_server, work)
    assert smtp_server.received == []
    send(smtp_server, "ada@example.com")  # the script is used up: a new session delivers
    assert [r.connection for r in smtp_server.received] == [2]
    assert smtp_server.rsets == 0


def test_data_reply_refuses_the_message_after_rcpt_was_accepted(
    smtp_server: ScriptedSmtpServer,
) -> None:
    smtp_server.script("ada@example.com", "data 554 5.7.1 rejected")
    with pytest.raises(SMTPDataError) as refused:
        send(smtp_server, "ada@example.com")
    assert (refused.value.code, refused.value.message) == (554, "5.7.1 rejected")
    assert smtp_server.received == []
    assert smtp_server.rsets == 1  # aiosmtplib's sendmail sends RSET after a refusal


def test_delay_holds_the_answer_to_data() -> None:
    with ScriptedSmtpServer(delay=0.2) as server:
        started = time.monotonic()
        send(server, "ada@example.com")
        assert time.monotonic() - started >= 0.2


def test_a_reply_that_is_not_smtp_is_refused_when_scripted(
    smtp_server: ScriptedSmtpServer,
) -> None:
    with pytest.raises(ValueError, match="'bounce'"):
        smtp_server.script("ada@example.com", "bounce")


def test_starttls_is_required_and_verifies_with_the_certificate_as_ca(
    tls_files: tuple[Path, Path],
) -> None:
    certificate, key = tls_files
    trusting = ssl.create_default_context(cafile=certificate)
    with ScriptedSmtpServer(tls=server_tls_context(certificate, key)) as server:
        with pytest.raises(SMTPSenderRefused) as refused:
            send(server, "ada@example.com", start_tls=False)
        assert refused.value.code == 530
        send(server, "ada@example.com", start_tls=True, tls_context=trusting)
        assert [r.recipient for r in server.received] == ["ada@example.com"]


def test_implicit_tls_verifies_with_the_certificate_as_ca(tls_files: tuple[Path, Path]) -> None:
    certificate, key = tls_files
    trusting = ssl.create_default_context(cafile=certificate)
    with ScriptedSmtpServer(implicit_tls=server_tls_context(certificate, key)) as server:
        send(server, "ada@example.com", use_tls=True, tls_context=trusting)
        assert [r.recipient for r in server.received] == ["ada@example.com"]
        assert server.connections == 1


def test_auth_plain_and_login_with_the_right_password_may_send() -> None:
    with ScriptedSmtpServer(auth={"mailer": "s3cret"}) as server:

        async def plain(client: aiosmtplib.SMTP) -> None:
            await client.auth_plain("mailer", "s3cret")
            await client.sendmail(SENDER, ["ada@example.com"], MESSAGE)

        async def login(client: aiosmtplib.SMTP) -> None:
            await client.auth_login("mailer", "s3cret")
            await client.sendmail(SENDER, ["bob@example.com"], MESSAGE)

        session(server, plain)
        session(server, login)
        send(server, "cy@example.com", username="mailer", password="s3cret")
        assert len(server.received) == 3


def test_auth_with_a_wrong_password_or_none_may_not_send() -> None:
    with ScriptedSmtpServer(auth={"mailer": "s3cret"}) as server:
        with pytest.raises(SMTPAuthenticationError) as refused:
            send(server, "ada@example.com", username="mailer", password="wrong")
        assert refused.value.code == 535
        with pytest.raises(SMTPSenderRefused) as unauthenticated:
            send(server, "ada@example.com")
        assert unauthenticated.value.code == 530
        assert server.received == []
