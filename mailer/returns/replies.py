"""Mail to reply+TOKEN@ (the Reply-To of campaign mail with [sender] reply_tracking): a person
answering one of our messages wants a person. The reply is recorded as a `replied` event of
that message's contact, campaign and step (segments, goals, `exit_on_reply`), then forwarded
unchanged to [inbound] replies_to through the relays (failover as for campaign mail).

What reaches the address is classified first: an out-of-office or other auto-reply is no reply
(nothing is recorded or forwarded), and a bounce is handled as bounces are.

Once per message (its digest, a returned_messages row): processing the same file again after a
crash neither records a second event nor forwards twice, unless the forward itself did not
finish, which is then tried again.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from mailer.contacts.events import record_event
from mailer.delivery.relay_board import send_one
from mailer.delivery.rendering import wire_form
from mailer.errors import MailerError
from mailer.render.message import RenderedMessage
from mailer.render.mime import wire_address
from mailer.returns.classify import FROM_A_PERSON, classify
from mailer.returns.effects import report_digest
from mailer.returns.ingest import process
from mailer.returns.replied import REPLIED
from mailer.store.tables import contacts, outbox, returned_messages
from mailer.workspace import Workspace

FORWARDED = "forwarded to "
BARE_LF = re.compile(rb"(?<!\r)\n")


def process_reply(workspace: Workspace, outbox_id: int, content: bytes, name: str,
                  now: datetime) -> str:  # fmt: skip
    """One message to reply+TOKEN@ (the token named `outbox_id`): "classification: action"."""
    returned = classify(content)
    if returned.classification != "not_bounce":  # a bounce (or junk) sent to our Reply-To
        bounce = process(workspace, content, name, now, source="inbound", returned=returned)
        return f"{bounce.returned.classification}: {bounce.action_taken}"
    if returned.why != FROM_A_PERSON:
        return f"not_bounce: none (not a reply: {returned.why})"
    digest = report_digest(content)
    with workspace.engine.begin() as connection:
        done = connection.scalar(
            select(returned_messages.c.action).where(returned_messages.c.digest == digest)
        )
        if done is None:
            done = _record(connection, outbox_id, digest, now)
    if done.startswith(FORWARDED) or not done.startswith(REPLIED):
        return f"reply: none (already processed: {done})"
    inbox = _forward(workspace, content)
    with workspace.engine.begin() as connection:
        connection.execute(update(returned_messages).where(returned_messages.c.digest == digest)
                           .values(action=f"{FORWARDED}{inbox}"))  # fmt: skip
    return f"reply: {done}; {FORWARDED}{inbox}"


def _record(connection: Connection, outbox_id: int, digest: str, now: datetime) -> str:
    """The `replied` event and the returned_messages row that makes it happen once; the
    action written says what is left to do (the forward)."""
    row = connection.execute(
        select(outbox.c.campaign, outbox.c.step, contacts.c.email)
        .outerjoin(contacts, contacts.c.id == outbox.c.contact_id)
        .where(outbox.c.id == outbox_id)
    ).first()  # fmt: skip
    if row is None or row.email is None:
        # Still a person's words: forwarded, though nothing can be recorded against anyone.
        action = f"{REPLIED} (no contact: {'erased' if row else 'message not found'})"
    else:
        properties = {"campaign": row.campaign, "step": row.step, "outbox_id": outbox_id}
        record_event(connection, row.email, REPLIED, now, properties)
        action = f"{REPLIED} ({row.campaign}.{row.step})"
    connection.execute(insert(returned_messages).values(
        digest=digest, received_at=now, classification="reply", outbox_id=outbox_id,
        campaign=row.campaign if row else None, action=action))  # fmt: skip
    return action


def _forward(workspace: Workspace, content: bytes) -> str:
    """The message as it came, to the person's inbox through the relay; MailerError when the
    relay does not take it (the file stays in new/ and is forwarded at the next start)."""
    settings = workspace.settings
    inbox = settings.inbound.replies_to
    if inbox is None:
        raise MailerError("a reply to forward, but no [inbound] replies_to")
    recipient = wire_address(inbox)
    data = BARE_LF.sub(b"\r\n", content)  # SMTP's line ends; the text itself unchanged
    # From ourselves (the sender's address): a forward that bounces reaches a person there,
    # and SPF passes for our relay; the replier's own From and DKIM signature stay intact.
    message = RenderedMessage("reply-forward", "", settings.sender.email, recipient,
                              not recipient.isascii(), "", "", "", [], data)  # fmt: skip
    outgoing = wire_form(message)
    relay, reply = asyncio.run(send_one(workspace.engine, settings, outgoing.envelope_from,
                                        recipient, outgoing.wire, outgoing.smtputf8,
                                        workspace.clock.now()))  # fmt: skip
    if reply.code != 250:
        raise MailerError(f"the relay {relay} refused the forward to {inbox}: {reply}")
    return inbox
