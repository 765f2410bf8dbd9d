"""One relay session against a real SMTP server: the bytes arrive as rendered, addresses that
need SMTPUTF8 go only where it is offered, and one session carries many messages."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailer.config import Settings, Smtp, load_settings
from mailer.delivery.relay import RelaySession, cleartext_password
from mailer.delivery.rendering import Outgoing, wire_form
from mailer.delivery.replies import SmtpReply
from mailer.delivery.worker import run_loop
from mailer.errors import MailerError
from mailer.render.message import RenderedMessage
from tests.conftest import SECRET
from tests.delivery.smtp_server import ScriptedSmtpServer

MESSAGE = b"Subject: dots\r\n\r\nfirst\r\n.hidden\r\n..two\r\n.\r\nlast\r\n"


def outgoing(recipient: str, data: bytes = MESSAGE) -> Outgoing:
    rendered = RenderedMessage("m1", "<m1@x>", "bounces@acme.example", recipient,
                               not recipient.isascii(), "dots", "", "", [], data)  # fmt: skip
    return wire_form(rendered)


def settings_for(project: Path, port: int, **smtp: str) -> Settings:
    environ = {"MAILER_SECRET_KEY": SECRET, "MAILER_SMTP__PORT": str(port)}
    environ |= {f"MAILER_SMTP__{key.upper()}": value for key, value in smtp.items()}
    return load_settings(project / "settings.toml", environ=environ)


def send_all(settings: Settings, *messages: Outgoing) -> list[SmtpReply]:
    async def session() -> list[SmtpReply]:
        relay = RelaySession(settings, settings.smtp_password())
        try:
            return [await relay.send(m.envelope_from, m.recipient, m.wire, m.smtputf8)
                    for m in messages]  # fmt: skip
        finally:
            await relay.close()

    return run_loop(session())


def test_lines_starting_with_a_dot_arrive_as_they_were_written() -> None:
    assert outgoing("a@x.example").wire == (
        b"Subject: dots\r\n\r\nfirst\r\n..hidden\r\n...two\r\n..\r\nlast\r\n.\r\n"
    )
    assert outgoing("a@x.example", b"no final line break").wire.endswith(b"break\r\n.\r\n")


def test_many_messages_share_one_session_and_arrive_intact(
    project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    settings = settings_for(project, smtp_server.port)
    replies = send_all(settings, *(outgoing(f"r{n}@x.example") for n in range(5)))
    assert [reply.code for reply in replies] == [250] * 5
    assert smtp_server.connections == 1 and smtp_server.rsets == 0
    assert {message.data for message in smtp_server.received} == {MESSAGE}


def test_a_refused_transaction_is_reset_before_the_next(
    project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    smtp_server.script("no@x.example", "550 5.1.1 no such user")
    settings = settings_for(project, smtp_server.port)
    replies = send_all(settings, outgoing("no@x.example"), outgoing("yes@x.example"))
    assert [(reply.code, reply.stage) for reply in replies] == [(550, "rcpt"), (250, "data")]
    assert smtp_server.rsets == 1
    assert [message.recipient for message in smtp_server.received] == ["yes@x.example"]


def test_a_421_closes_the_connection_and_the_next_message_opens_a_new_one(
    project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    """RFC 5321 3.8: a relay that answers 421 is closing the channel; nothing more is said
    on it (no RSET), the next message connects again."""
    smtp_server.script("busy@x.example", "421 4.7.0 Too busy, closing")
    settings = settings_for(project, smtp_server.port)
    replies = send_all(settings, outgoing("busy@x.example"), outgoing("yes@x.example"))
    assert [(reply.code, reply.stage) for reply in replies] == [(421, "rcpt"), (250, "data")]
    assert smtp_server.connections == 2 and smtp_server.rsets == 0
    assert [message.recipient for message in smtp_server.received] == ["yes@x.example"]


def test_an_address_that_needs_smtputf8_goes_only_to_a_relay_that_offers_it(
    project: Path,
) -> None:
    for offered in (True, False):
        with ScriptedSmtpServer(smtputf8=offered) as relay:
            settings = settings_for(project, relay.port)
            [reply] = send_all(settings, outgoing("zoë@example.fr"))
        if offered:
            assert reply.code == 250
            assert [m.recipient for m in relay.received] == ["zoë@example.fr"]
        else:
            assert (reply.code, reply.stage) == (553, "rcpt") and "SMTPUTF8" in reply.text
            assert relay.received == []


def this_machines_network_address() -> str:
    """An address of this machine that is not loopback: where a relay across the network
    would be, as far as mailer can tell."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address: str = probe.getsockname()[0]
    except OSError:
        pytest.skip("this machine has no network address besides loopback")
    if address.startswith("127."):
        pytest.skip("this machine has no network address besides loopback")
    return address


def test_a_password_is_never_sent_in_clear_to_a_relay_across_the_network(
    project: Path,
) -> None:
    with ScriptedSmtpServer(auth={"acme": "hunter2"},
                            host=this_machines_network_address()) as relay:  # fmt: skip
        settings = settings_for(project, relay.port, host=relay.host, username="acme",
                                password="hunter2")  # fmt: skip
        with pytest.raises(MailerError, match=r'smtp.tls: "none" would send the password of '
                           rf"acme in clear to {relay.host}; set tls = \"starttls\""):  # fmt: skip
            send_all(settings, outgoing("a@x.example"))
        assert relay.connections == 0 and relay.received == []


def test_a_relay_on_this_machine_may_take_a_password_without_tls(project: Path) -> None:
    with ScriptedSmtpServer(auth={"acme": "hunter2"}) as relay:
        settings = settings_for(project, relay.port, username="acme", password="hunter2")
        [reply] = send_all(settings, outgoing("a@x.example"))
    assert reply.code == 250 and [m.recipient for m in relay.received] == ["a@x.example"]


@pytest.mark.parametrize(("host", "tls", "username", "refused"), [
    ("smtp.example.net", "none", "acme", True),
    ("192.0.2.7", "none", "acme", True),
    ("smtp.example.net", "starttls", "acme", False),
    ("smtp.example.net", "implicit", "acme", False),
    ("smtp.example.net", "none", None, False),  # no AUTH, no password on the wire
    ("127.0.0.1", "none", "acme", False),
    ("127.0.0.53", "none", "acme", False),
    ("::1", "none", "acme", False),
    ("localhost", "none", "acme", False),
    ("localhost.example.net", "none", "acme", True),
])  # fmt: skip
def test_only_a_login_in_clear_across_the_network_is_refused(
    host: str, tls: str, username: str | None, refused: bool
) -> None:
    smtp = Smtp.model_validate({"host": host, "tls": tls, "username": username})
    assert (cleartext_password(smtp) is not None) == refused
