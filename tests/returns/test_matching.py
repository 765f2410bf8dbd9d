"""Matching a returned message to the message we sent (returns/matching.py), on real
databases: the signed VERP token first, then our Message-ID, then the address's latest
message within the window. A forged token matches nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert

from mailer.returns.matching import RECIPIENT_WINDOW, match
from mailer.returns.report import Returned
from mailer.store.tables import contacts, outbox
from mailer.tokens import TokenKeys, sign
from mailer.workspace import Workspace
from tests.conftest import NOW


def add_contact(workspace: Workspace, email: str) -> int:
    with workspace.engine.begin() as connection:
        return int(connection.execute(insert(contacts).values(
            email=email, attributes={}, created_at=NOW, updated_at=NOW,
        )).inserted_primary_key[0])  # fmt: skip


def add_sent(workspace: Workspace, contact_id: int, step: str, sent_at: datetime | None,
             message_id: str) -> int:  # fmt: skip
    with workspace.engine.begin() as connection:
        return int(connection.execute(insert(outbox).values(
            campaign="welcome", step=step, contact_id=contact_id, cycle=0,
            status="sent" if sent_at else "queued", queued_at=NOW - timedelta(days=30),
            sent_at=sent_at, message_id=message_id, attempts=1,
        )).inserted_primary_key[0])  # fmt: skip


def matched(workspace: Workspace, returned: Returned, now: datetime | None = NOW) -> int | None:
    with workspace.engine.connect() as connection:
        return match(connection, workspace.renderer.keys, returned, now)


@pytest.fixture
def ada(workspace: Workspace) -> tuple[int, int]:
    """Ada was sent two messages: (the older, the newer) outbox ids."""
    contact = add_contact(workspace, "ada@example.com")
    older = add_sent(workspace, contact, "hello", NOW - timedelta(days=3), "<m-old@acme.example>")
    newer = add_sent(workspace, contact, "tips", NOW - timedelta(days=1), "<m-new@acme.example>")
    return older, newer


def token(workspace: Workspace, outbox_id: int) -> str:
    return sign(workspace.renderer.keys, "bounce", f"m{outbox_id}")


def test_a_genuine_token_wins_over_message_id_and_recipient(
    workspace: Workspace, ada: tuple[int, int]
) -> None:
    older, _ = ada
    returned = Returned("hard", "ada@example.com", verp_token=token(workspace, older),
                        original_message_id="m-new@acme.example")  # fmt: skip
    assert matched(workspace, returned) == older


def test_a_forged_token_matches_nothing_even_with_a_good_message_id(
    workspace: Workspace, ada: tuple[int, int]
) -> None:
    older, _ = ada
    forged = sign(TokenKeys(b"someone else's secret key, 32+ bytes"), "bounce", f"m{older}")
    returned = Returned("hard", "ada@example.com", verp_token=forged,
                        original_message_id="m-old@acme.example")  # fmt: skip
    assert matched(workspace, returned) is None


def test_a_token_for_a_message_that_is_not_in_the_outbox_matches_nothing(
    workspace: Workspace, ada: tuple[int, int]
) -> None:
    for key in ("m999", "confirm-1"):
        returned = Returned("hard", "ada@example.com",
                            verp_token=sign(workspace.renderer.keys, "bounce", key))  # fmt: skip
        assert matched(workspace, returned) is None


def test_a_token_signed_for_another_purpose_matches_nothing(
    workspace: Workspace, ada: tuple[int, int]
) -> None:
    older, _ = ada
    click = sign(workspace.renderer.keys, "unsubscribe", f"m{older}")
    assert matched(workspace, Returned("hard", verp_token=click)) is None


def test_without_a_token_the_message_id_matches(workspace: Workspace, ada: tuple[int, int]) -> None:
    older, _ = ada
    returned = Returned("hard", "ada@example.com", original_message_id="m-old@acme.example")
    assert matched(workspace, returned) == older


def test_without_token_or_known_message_id_the_latest_message_to_the_address_matches(
    workspace: Workspace, ada: tuple[int, int]
) -> None:
    _, newer = ada
    for returned in (
        Returned("hard", "Ada@Example.COM"),
        Returned("hard", "ada@example.com", original_message_id="other@x.example"),
    ):
        assert matched(workspace, returned) == newer  # fmt: skip


def test_the_recipient_fallback_ignores_messages_outside_the_window_and_unsent_ones(
    workspace: Workspace,
) -> None:
    contact = add_contact(workspace, "bob@example.com")
    add_sent(workspace, contact, "hello", NOW - RECIPIENT_WINDOW - timedelta(hours=1), "<a@x>")
    add_sent(workspace, contact, "tips", None, "<b@x>")
    assert matched(workspace, Returned("hard", "bob@example.com")) is None
    assert matched(workspace, Returned("hard", "nobody@example.com")) is None
    assert matched(workspace, Returned("complaint")) is None
