"""RFC 2920 PIPELINING against a real SMTP server (aiosmtpd, told to advertise it): MAIL, RCPT
and DATA go out in one write, their replies are read in order, and the first refusal is the
one reported; a relay that does not advertise PIPELINING gets one command at a time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from aiosmtplib import SMTPResponse
from hypothesis import given
from hypothesis import strategies as st

from mailer.clock import FrozenClock
from mailer.config import Settings, load_settings
from mailer.delivery.pipelining import LONGEST_REPLY, ReplyParser
from mailer.delivery.relay import Envelope as Announced
from mailer.delivery.relay import RelaySession
from mailer.delivery.rendering import Outgoing
from mailer.delivery.replies import SmtpReply, Verdict, judge
from mailer.delivery.worker import run_loop
from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import LOOPBACK, ScriptedSmtpServer, _Connection
from tests.delivery.test_relay import MESSAGE, outgoing, send_all, settings_for
from tests.tcp_hop import TcpHop


class PipeliningServer(ScriptedSmtpServer):
    """The scripted server, advertising PIPELINING (aiosmtpd reads pipelined commands in
    order but does not say so), with more ways to refuse and misbehave."""

    def __init__(self) -> None:
        super().__init__()
        self._controller.factory = self._connection  # type: ignore[method-assign]
        self.refuse_mail: str | None = None  # the next answer to MAIL FROM, once
        self.refuse_data: str | None = None  # the next answer to the DATA command, once
        self.drop_at_rcpt: set[str] = set()  # recipients whose RCPT closes the connection
        # Answer DATA with 354 although RCPT was refused (RFC 2920 3.1 warns of such servers);
        # what the client sent as the message then lands in `after_refusal`.
        self.data_despite_refusal = False
        self.after_refusal: list[bytes] = []

    def _connection(self) -> _Connection:
        return _RefusingConnection(self, self.count_connection(),
                                   **self._controller.SMTP_kwargs)  # fmt: skip

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:  # fmt: skip
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:  # fmt: skip
        refusal, self.refuse_mail = self.refuse_mail, None
        if refusal is not None:
            return refusal
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_RCPT(self, server: _Connection, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:  # fmt: skip
        if address in self.drop_at_rcpt:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            await asyncio.get_running_loop().create_future()  # cancelled by connection_lost
        reply = await super().handle_RCPT(server, session, envelope, address, options)
        if not reply.startswith("250") and self.data_despite_refusal:
            envelope.rcpt_tos.append(address)
            server.data_replies[address] = reply
        return reply

    async def handle_DATA(self, server: _Connection, session: Session,
                          envelope: Envelope) -> str:  # fmt: skip
        replies = [server.data_replies.get(r, "250") for r in envelope.rcpt_tos]
        if self.data_despite_refusal and any(r[:1] in "45" for r in replies):
            self.after_refusal.append(envelope.original_content or b"")
            return "554 5.5.1 No valid recipients"
        return await super().handle_DATA(server, session, envelope)


class _RefusingConnection(_Connection):
    """A connection that can refuse the DATA command itself (aiosmtpd's hook comes after the
    message), as a relay does whose policy refuses after the recipients."""

    async def smtp_DATA(self, arg: str) -> None:
        server = self.event_handler
        assert isinstance(server, PipeliningServer)
        refusal, server.refuse_data = server.refuse_data, None
        if refusal is None:
            await super().smtp_DATA(arg)
        else:
            await self.push(refusal)


class RecordingProxy(TcpHop):
    """A TCP hop between mailer and the server that keeps each chunk mailer sends as it came
    off the socket: commands written at once arrive at once, commands written after a reply
    arrive apart (the reply passes here after the command did)."""

    def __init__(self, port: int) -> None:
        self.chunks: list[bytes] = []
        super().__init__(LOOPBACK, port)

    def commands(self) -> list[bytes]:
        """The chunks mailer sent that held commands, not a message."""
        return [chunk for chunk in self.chunks if not chunk.startswith(b"Subject: dots")]

    def passing(self, data: bytes, from_client: bool) -> None:
        if from_client:
            self.chunks.append(data)


@pytest.fixture
def relay() -> Iterator[PipeliningServer]:
    with PipeliningServer() as server:
        yield server


@contextlib.contextmanager
def recording(port: int) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(port)
    try:
        yield proxy
    finally:
        proxy.close()


def test_mail_rcpt_and_data_go_in_one_write_and_the_message_arrives_once(
    project: Path, relay: PipeliningServer
) -> None:
    with recording(relay.port) as proxy:
        settings = settings_for(project, proxy.port)
        replies = send_all(settings, outgoing("ada@x.example"), outgoing("bob@x.example"))
    assert [(reply.code, reply.stage) for reply in replies] == [(250, "data"), (250, "data")]
    assert [(m.envelope_from, m.recipient, m.data, m.connection) for m in relay.received] == [
        ("bounces@acme.example", "ada@x.example", MESSAGE, 1),
        ("bounces@acme.example", "bob@x.example", MESSAGE, 1),
    ]
    assert proxy.commands()[-3:] == [
        b"MAIL FROM:<bounces@acme.example>\r\nRCPT TO:<ada@x.example>\r\nDATA\r\n",
        b"MAIL FROM:<bounces@acme.example>\r\nRCPT TO:<bob@x.example>\r\nDATA\r\n",
        b"QUIT\r\n",
    ]
    assert relay.connections == 1 and relay.rsets == 0


def test_a_relay_without_pipelining_gets_one_command_at_a_time(
    project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    with recording(smtp_server.port) as proxy:
        settings = settings_for(project, proxy.port)
        [reply] = send_all(settings, outgoing("ada@x.example"))
    assert (reply.code, reply.stage) == (250, "data")
    assert proxy.commands()[-4:] == [b"MAIL FROM:<bounces@acme.example>\r\n",
                                     b"RCPT TO:<ada@x.example>\r\n", b"DATA\r\n",
                                     b"QUIT\r\n"]  # fmt: skip
    assert [m.recipient for m in smtp_server.received] == ["ada@x.example"]


@pytest.mark.parametrize(("step", "refusal", "verdict"), [
    ("mail", SmtpReply(550, "5.7.1 Sender not allowed", "mail"),
     Verdict("retry", relay_refusal=True)),
    ("rcpt", SmtpReply(550, "5.1.1 No such user", "rcpt"), Verdict("failed", hard_bounce=True)),
    ("data", SmtpReply(554, "5.7.1 Rejected by policy", "data"),
     Verdict("failed", relay_refusal=True)),
])  # fmt: skip
def test_the_first_refused_step_is_reported_its_message_never_sent_and_the_next_follows_a_rset(
    project: Path, relay: PipeliningServer, step: str, refusal: SmtpReply, verdict: Verdict
) -> None:
    """RFC 2920 3.1: after a refused MAIL or RCPT the relay refuses DATA too (503); the reply
    to report is the first refusal, and the message is not sent."""
    if step == "mail":
        relay.refuse_mail = str(refusal)
    elif step == "rcpt":
        relay.script("ada@x.example", str(refusal))
    else:
        relay.refuse_data = str(refusal)
    with recording(relay.port) as proxy:
        settings = settings_for(project, proxy.port)
        replies = send_all(settings, outgoing("ada@x.example"), outgoing("bob@x.example"))
    assert replies[0] == refusal and judge(replies[0]) == verdict
    assert (replies[1].code, replies[1].stage) == (250, "data")
    assert [m.recipient for m in relay.received] == ["bob@x.example"]
    assert sum(chunk.startswith(b"Subject: dots") for chunk in proxy.chunks) == 1  # bob@'s
    assert relay.rsets == 1


def test_a_message_refused_after_its_data_is_reported_at_data(
    project: Path, relay: PipeliningServer
) -> None:
    relay.script("ada@x.example", "data 554 5.7.1 Looks like spam")
    settings = settings_for(project, relay.port)
    replies = send_all(settings, outgoing("ada@x.example"), outgoing("bob@x.example"))
    assert replies[0] == SmtpReply(554, "5.7.1 Looks like spam", "data")
    assert [m.recipient for m in relay.received] == ["bob@x.example"]
    assert relay.rsets == 0  # the transaction ended with the message: nothing to reset


def test_a_354_after_a_refused_recipient_gets_an_empty_message_and_a_rset(
    project: Path, relay: PipeliningServer
) -> None:
    """RFC 2920 3.1: a server that takes DATA although no recipient was accepted gets a lone
    '.', never the message; the transaction is reset before the next one."""
    relay.data_despite_refusal = True
    relay.script("no@x.example", "550 5.1.1 No such user")
    settings = settings_for(project, relay.port)
    replies = send_all(settings, outgoing("no@x.example"), outgoing("yes@x.example"))
    assert replies[0] == SmtpReply(550, "5.1.1 No such user", "rcpt")
    assert (replies[1].code, replies[1].stage) == (250, "data")
    assert relay.after_refusal == [b""]
    assert [m.recipient for m in relay.received] == ["yes@x.example"]
    assert relay.rsets == 1


def test_a_connection_closed_mid_pipeline_is_no_answer_and_the_next_message_reconnects(
    project: Path, relay: PipeliningServer
) -> None:
    relay.drop_at_rcpt.add("cut@x.example")
    settings = settings_for(project, relay.port)
    replies = send_all(settings, outgoing("cut@x.example"), outgoing("yes@x.example"))
    assert replies[0].code is None and "SMTPServerDisconnected" in replies[0].text
    assert judge(replies[0]).outcome == "retry"
    assert (replies[1].code, replies[1].stage) == (250, "data")
    assert [(m.recipient, m.connection) for m in relay.received] == [("yes@x.example", 2)]


def test_a_421_mid_pipeline_closes_the_connection(project: Path, relay: PipeliningServer) -> None:
    relay.script("busy@x.example", "421 4.7.0 Too busy, closing")
    settings = settings_for(project, relay.port)
    replies = send_all(settings, outgoing("busy@x.example"), outgoing("yes@x.example"))
    assert [(reply.code, reply.stage) for reply in replies] == [(421, "rcpt"), (250, "data")]
    assert relay.connections == 2 and relay.rsets == 0
    assert [m.recipient for m in relay.received] == ["yes@x.example"]


# The reply parser: whatever way the bytes are cut, the same replies in the same order.

reply_texts = st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"),
                               max_size=20), min_size=1, max_size=4)  # fmt: skip
replies_sent = st.lists(st.tuples(st.integers(200, 599), reply_texts), min_size=1, max_size=5)


def wire(code: int, lines: list[str]) -> bytes:
    return b"".join(f"{code}{'-' if n < len(lines) - 1 else ' '}{line}\r\n".encode()
                    for n, line in enumerate(lines))  # fmt: skip


@given(replies_sent, st.lists(st.integers(0, 400), max_size=10))
def test_replies_parse_the_same_however_the_bytes_are_cut(
    sent: list[tuple[int, list[str]]], cuts: list[int]
) -> None:
    data = b"".join(wire(code, lines) for code, lines in sent)
    parser = ReplyParser()
    parsed: list[SMTPResponse] = []
    edges = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    for start, end in itertools.pairwise(edges):
        parsed += parser.feed(data[start:end])
    expected = [(code, "\n".join(line.strip(" \t") for line in lines)) for code, lines in sent]
    assert [(reply.code, reply.message) for reply in parsed] == expected


def test_a_line_that_is_no_reply_and_a_reply_without_end_are_errors() -> None:
    with pytest.raises(ValueError, match="malformed reply line from the relay: 'hello'"):
        ReplyParser().feed(b"250 OK\r\nhello\r\n")
    with pytest.raises(ValueError, match="longer than"):
        ReplyParser().feed(b"250-" + b"x" * LONGEST_REPLY + b"\r\n")


# A session announces the next message: its MAIL, RCPT and DATA go out with this message.


def send_announcing(settings: Settings,
                    sends: list[tuple[Outgoing, Outgoing | None]]) -> list[SmtpReply]:  # fmt: skip
    """Send each message on one session, announcing the one beside it (None: nothing)."""

    async def session() -> list[SmtpReply]:
        relay = RelaySession(settings, settings.smtp_password())
        try:
            replies = []
            for message, following in sends:
                then = (
                    None
                    if following is None
                    else Announced(following.envelope_from, following.recipient, following.smtputf8)
                )
                replies.append(await relay.send(message.envelope_from, message.recipient,
                                                message.wire, message.smtputf8, then))  # fmt: skip
            return replies
        finally:
            await relay.close()

    return run_loop(session())


def envelope_of(recipient: str) -> bytes:
    return (b"MAIL FROM:<bounces@acme.example>\r\nRCPT TO:<" + recipient.encode()
            + b">\r\nDATA\r\n")  # fmt: skip


def test_the_next_messages_envelope_goes_out_with_this_message_and_each_arrives_once(
    project: Path, relay: PipeliningServer
) -> None:
    ada, bob, cy = (outgoing(f"{name}@x.example") for name in ("ada", "bob", "cy"))
    with recording(relay.port) as proxy:
        replies = send_announcing(settings_for(project, proxy.port),
                                  [(ada, bob), (bob, cy), (cy, None)])  # fmt: skip
    assert [(reply.code, reply.stage) for reply in replies] == [(250, "data")] * 3
    assert [(m.recipient, m.data, m.connection) for m in relay.received] == [
        (message.recipient, MESSAGE, 1) for message in (ada, bob, cy)
    ]
    bodies = [chunk for chunk in proxy.chunks if chunk.startswith(b"Subject: dots")]
    assert bodies == [ada.wire + envelope_of("bob@x.example"),
                      bob.wire + envelope_of("cy@x.example"), cy.wire]  # fmt: skip
    assert envelope_of("bob@x.example") not in proxy.commands()  # not written again
    assert relay.rsets == 0


def test_an_announced_message_not_sent_next_is_dropped_with_the_connection_not_delivered(
    project: Path, relay: PipeliningServer
) -> None:
    """After its 354 the relay waits for the announced message's content: only hanging up
    drops it (a lone dot would deliver an empty message). The message sent instead goes on a
    new connection."""
    ada, bob, cy = (outgoing(f"{name}@x.example") for name in ("ada", "bob", "cy"))
    replies = send_announcing(settings_for(project, relay.port), [(ada, bob), (cy, None)])
    assert [(reply.code, reply.stage) for reply in replies] == [(250, "data")] * 2
    assert [(m.recipient, m.data, m.connection) for m in relay.received] == [
        ("ada@x.example", MESSAGE, 1), ("cy@x.example", MESSAGE, 2)
    ]  # fmt: skip


def test_a_session_closed_with_an_announcement_pending_delivers_nothing_more(
    project: Path, relay: PipeliningServer
) -> None:
    """It hangs up (a QUIT after the announced DATA would be read as the message's content)."""
    ada, bob = outgoing("ada@x.example"), outgoing("bob@x.example")
    [reply] = send_announcing(settings_for(project, relay.port), [(ada, bob)])
    assert (reply.code, reply.stage) == (250, "data")
    assert [m.recipient for m in relay.received] == ["ada@x.example"]


def test_an_announced_recipient_refused_is_its_own_messages_answer(
    project: Path, relay: PipeliningServer
) -> None:
    relay.script("bob@x.example", "550 5.1.1 No such user")
    ada, bob, cy = (outgoing(f"{name}@x.example") for name in ("ada", "bob", "cy"))
    replies = send_announcing(settings_for(project, relay.port),
                              [(ada, bob), (bob, cy), (cy, None)])  # fmt: skip
    assert [(reply.code, reply.stage) for reply in replies] == [
        (250, "data"),
        (550, "rcpt"),
        (250, "data"),
    ]
    assert [(m.recipient, m.connection) for m in relay.received] == [
        ("ada@x.example", 1), ("cy@x.example", 1)
    ]  # fmt: skip
    assert relay.rsets == 1  # before cy@'s envelope: bob@'s was never announced after a refusal


@pytest.mark.parametrize("rate", [None, "1000/s"])
def test_a_delivery_announces_each_next_message_waiting_unless_a_rate_must_admit_it(
    project: Path, environ: dict[str, str], clock: FrozenClock, relay: PipeliningServer,
    rate: str | None,
) -> None:  # fmt: skip
    """One session, three messages rendered and waiting: the second and third are announced
    with the message before them. Under a rate, each message is admitted before its envelope
    goes, so nothing is announced."""
    people = ["ada@x.example", "bob@x.example", "cy@x.example"]
    with recording(relay.port) as proxy:
        variables = {"SMTP__PORT": str(proxy.port), "SMTP__POOL_SIZE": "1",
                     "DELIVERY__RENDER_PROCESSES": "0"}  # fmt: skip
        if rate is not None:
            variables["DELIVERY__RATE"] = rate
        settings = load_settings(project / "settings.toml", environ={
            **environ, **{f"MAILER_{key}": value for key, value in variables.items()}})  # fmt: skip
        workspace = Workspace(settings, clock)
        try:
            queue_welcome(workspace, project, *(f"{person},{person[:2]}" for person in people))
            report = deliver(workspace)
        finally:
            workspace.close()
    assert report.sent == 3
    assert sorted(m.recipient for m in relay.received) == people
    announcing = [chunk for chunk in proxy.chunks if b"\r\n.\r\nMAIL FROM:<" in chunk]
    assert len(announcing) == (0 if rate else 2)
