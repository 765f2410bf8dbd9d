"""Which links a message's stored clicks hold is read through the contact's clicks under the
campaign's name (the index that holds the kind): only the message's own clicks count, not
another message's of the same contact and campaign."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailer.store.tables import events, outbox
from tests.tracking.test_recording import Sent, hit, message, stored, write


def test_a_machines_click_on_another_message_of_the_contact_leaves_the_open_a_persons(
    sent: Sent,
) -> None:
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    at = sent_at + timedelta(minutes=5)
    with workspace.engine.begin() as connection:
        contact, campaign, step = connection.execute(
            select(outbox.c.contact_id, outbox.c.campaign, outbox.c.step)).one()  # fmt: skip
        connection.execute(events.insert(), [  # the same contact and campaign, another message
            {"contact_id": contact, "kind": "machine_click", "name": campaign, "step": step,
             "properties": {"user_agent": "curl/8.0", "ip": "", "link": links["honeypot"],
                            "url": None, "machine": "honeypot link clicked"},
             "occurred_at": at - timedelta(seconds=seconds), "outbox_id": int(key[1:]) + 1000}
            for seconds in (1, 2, 3)])  # fmt: skip
    write(workspace, workspace.settings, hit("open", key, at))
    assert stored(workspace)[-1] == ("open", None)
    # The same clicks as the message's own, later: its next open goes with them (rule 7).
    with workspace.engine.begin() as connection:
        connection.execute(events.update().where(events.c.kind == "machine_click").values(
            outbox_id=int(key[1:]), occurred_at=at + timedelta(seconds=100)))  # fmt: skip
    write(workspace, workspace.settings, hit("open", key, at + timedelta(seconds=120)))
    assert stored(workspace)[-1] == ("machine_open", "pixel fetched 20 s after a machine's click")
