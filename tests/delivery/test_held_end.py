"""A session sends its next message while its last result is being committed, all but the
final "." of DATA, which waits for that commit: the relay never takes a message before the
result of the one before it on the same connection is written down, so a crash repeats at
most one message per connection (DESIGN.md's duplicate window)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select

from mailer.contacts.model import load_contacts
from mailer.delivery.claims import message_key
from mailer.delivery.relay import Abandoned, RelaySession
from mailer.delivery.worker import run_loop
from mailer.store.tables import contacts, outbox
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.conftest import Opener
from tests.delivery.helpers import deliver, queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer, _Connection
from tests.delivery.test_relay import MESSAGE, outgoing, settings_for


def test_a_held_message_reaches_the_relay_only_once_its_hold_is_done(
    project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    settings = settings_for(project, smtp_server.port)
    first, second = outgoing("first@x.example"), outgoing("second@x.example")
    seen_while_held: list[list[str]] = []

    async def session() -> list[int | None]:
        relay = RelaySession(settings, None)
        commit = asyncio.get_running_loop().create_future()

        async def released() -> None:
            # What the relay has while the end waits: a message sent whole would arrive now.
            for _ in range(30):
                await asyncio.sleep(0.01)
            seen_while_held.append([m.recipient for m in smtp_server.received])
            commit.set_result(None)
            await commit

        try:
            one = await relay.send(first.envelope_from, first.recipient, first.wire, False)
            two = await relay.send(second.envelope_from, second.recipient, second.wire, False,
                                   released)  # fmt: skip
            return [one.code, two.code]
        finally:
            await relay.close()

    assert run_loop(session()) == [250, 250]
    assert seen_while_held == [["first@x.example"]]
    assert [m.recipient for m in smtp_server.received] == ["first@x.example", "second@x.example"]
    assert {m.data for m in smtp_server.received} == {MESSAGE}  # the same bytes either way
    assert smtp_server.connections == 1


def test_a_message_whose_hold_fails_is_abandoned_and_the_next_goes_on_a_new_connection(
    project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    settings = settings_for(project, smtp_server.port)
    held, after = outgoing("held@x.example"), outgoing("after@x.example")
    failure = RuntimeError("the database went away")

    async def session() -> int | None:
        relay = RelaySession(settings, None)

        def failed() -> asyncio.Future[None]:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(failure)
            return future

        try:
            with pytest.raises(Abandoned) as abandoned:
                await relay.send(held.envelope_from, held.recipient, held.wire, False, failed)
            assert abandoned.value.__cause__ is failure
            reply = await relay.send(after.envelope_from, after.recipient, after.wire, False)
            return reply.code
        finally:
            await relay.close()

    assert run_loop(session()) == 250
    assert [m.recipient for m in smtp_server.received] == ["after@x.example"]
    assert smtp_server.connections == 2


class CommitWatchingServer(ScriptedSmtpServer):
    """Checks, for each connection, whether the message it took before is written down
    `sent`: when the next one begins (MAIL) and when it ends (its "." arrived)."""

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self.previous: dict[int, str] = {}  # connection -> the recipient of its last message
        self.begun_before_commit = 0
        self.ended_before_commit: list[str] = []

    def previous_written(self, connection: int) -> bool:
        recipient = self.previous.get(connection)
        if recipient is None:
            return True
        with self.workspace.engine.connect() as database:
            status = database.scalar(select(outbox.c.status).join(contacts)
                                     .where(contacts.c.email == recipient))  # fmt: skip
        return status == "sent"

    async def handle_MAIL(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:  # fmt: skip
        if not self.previous_written(server.number):
            self.begun_before_commit += 1
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_DATA(self, server: _Connection, session: Session,
                          envelope: Envelope) -> str:  # fmt: skip
        if not self.previous_written(server.number):
            self.ended_before_commit.append(envelope.rcpt_tos[0])
        reply = await super().handle_DATA(server, session, envelope)
        self.previous[server.number] = envelope.rcpt_tos[0]
        return reply


def test_each_message_ends_only_after_the_result_before_it_on_its_connection_is_written(
    open_workspace: Opener, project: Path
) -> None:
    reader = open_workspace()
    with CommitWatchingServer(reader) as relay:
        workspace = open_workspace(SMTP__PORT=str(relay.port))
        queue_welcome(workspace, project, *(f"p{n:03d}@example.com,P{n}" for n in range(60)))
        report = deliver(workspace)
    assert report.sent == 60
    assert {row["status"] for row in rows(workspace).values()} == {"sent"}
    assert len(relay.received) == 60
    assert relay.ended_before_commit == []  # the duplicate window: one message a connection
    assert relay.begun_before_commit > 0  # the sessions did not sit idle during commits
    received = {m.recipient: m.data for m in relay.received}
    assert received == rendered_at_now(workspace)  # held or not, the bytes as rendered


def rendered_at_now(workspace: Workspace) -> dict[str, bytes]:
    """Each queued message rendered again, apart from delivery: its recipient and bytes."""
    outboxed = list(rows(workspace).values())
    with workspace.engine.connect() as connection:
        people = load_contacts(connection, [int(str(row["contact_id"])) for row in outboxed])
    campaign = workspace.settings.campaigns["welcome"]
    renders = [workspace.renderer.render("welcome", campaign.step(str(row["step"])),
                                         people[int(str(row["contact_id"]))],
                                         message_key(int(str(row["id"]))), None, now=NOW)
               for row in outboxed]  # fmt: skip
    return {message.recipient: message.data for message in renders}
