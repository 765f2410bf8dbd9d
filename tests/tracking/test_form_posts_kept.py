"""A sign-up form post is written down before it is answered (store/form_posts.py), so a
serving process that dies between its answer and the record loses nothing: any serving process
records what it left. Real HTTP (uvicorn), real SMTP (aiosmtpd), SQLite and PostgreSQL; the
clock injected."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from starlette.applications import Starlette

from mailer.consent.person import erase_person
from mailer.store import form_posts as kept
from mailer.store.tables import consent_entries
from mailer.tracking.app import create_app
from mailer.tracking.forms import FormRoutes, Lead
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.conftest import running
from tests.tracking.test_forms import forms, received, status, subscribe, subscribe_json  # noqa: F401

EVIDENCE = {"at": NOW.isoformat(), "ip": "81.2.69.160", "user_agent": "Firefox",
            "consent_text_version": "2026-11", "form_id": "footer", "source": "form"}  # fmt: skip
ADA = Lead("ada@example.com", "newsletter", "2026-11", "Ada", None, "footer")


def left_by_a_dead_process(workspace: Workspace) -> kept.KeptPost:
    """What a serving process had done when it died after its answer: the post written down,
    its record not made."""
    return kept.keep(workspace.engine, asdict(ADA), EVIDENCE, workspace.clock.now())


def test_a_post_answered_is_recorded_and_its_kept_row_deleted_with_the_record(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer  # noqa: F811
) -> None:
    workspace, app = forms
    with running(app) as base:
        assert subscribe(base).status_code == 200
        assert len(received(smtp_server, 1)) == 1
    assert status(workspace) == "pending"
    assert kept.count(workspace.engine) == 0


def test_a_post_left_by_a_process_that_died_is_recorded_once_by_another(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer  # noqa: F811
) -> None:
    workspace, _ = forms
    left = left_by_a_dead_process(workspace)
    other = FormRoutes(workspace)  # another serving process
    workspace.clock.advance(timedelta(seconds=30))  # its own record may still be on its way
    assert asyncio.run(other.record_leftovers()) == 0
    workspace.clock.advance(kept.LEFT_AFTER)
    assert asyncio.run(other.record_leftovers()) == 1
    assert asyncio.run(other.record_leftovers()) == 0  # recorded once
    assert status(workspace) == "pending"
    assert len(received(smtp_server, 1)) == 1
    with workspace.engine.connect() as connection:  # as of the answer, not of the record
        granted_at = connection.scalar(select(consent_entries.c.occurred_at)
                                       .where(consent_entries.c.action == "granted"))  # fmt: skip
    assert granted_at == left.received_at
    assert kept.count(workspace.engine) == 0


def test_a_serving_process_records_what_another_left_when_it_starts(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer  # noqa: F811
) -> None:
    workspace, _ = forms
    left_by_a_dead_process(workspace)
    workspace.clock.advance(kept.LEFT_AFTER * 2)
    with running(create_app(workspace)):  # `mailer serve`'s app, its start-up included
        deadline = time.monotonic() + 10
        while status(workspace) != "pending":
            assert time.monotonic() < deadline, "the left post was not recorded"
            time.sleep(0.05)
    assert len(received(smtp_server, 1)) == 1


def test_a_post_the_database_does_not_take_is_refused_with_503_and_nothing_recorded(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer  # noqa: F811
) -> None:
    workspace, app = forms
    posts = kept.engine_of(workspace.engine)  # on SQLite, the side file
    with posts.begin() as connection:
        connection.execute(text("ALTER TABLE form_posts RENAME TO form_posts_away"))
    with running(app) as base:
        refused = subscribe_json(base)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "60"
        assert "try again" in refused.json()["error"]
        assert subscribe(base).status_code == 503
        with posts.begin() as connection:
            connection.execute(text("ALTER TABLE form_posts_away RENAME TO form_posts"))
        assert status(workspace) is None
        assert subscribe(base).status_code == 200  # the person tries again
        assert len(received(smtp_server, 1)) == 1
    assert status(workspace) == "pending"


def test_an_erasure_deletes_a_post_not_yet_recorded(
    forms: tuple[Workspace, Starlette], project: Path  # noqa: F811
) -> None:
    workspace, _ = forms
    left_by_a_dead_process(workspace)
    with workspace.engine.begin() as connection:
        erase_person(connection, workspace.key, "Ada@Example.com", NOW, reference="DSR-7")
    assert kept.count(workspace.engine) == 0
    workspace.clock.advance(kept.LEFT_AFTER * 2)
    assert asyncio.run(FormRoutes(workspace).record_leftovers()) == 0
    assert status(workspace) is None


@pytest.mark.parametrize("broken", ["consent_entries"])
def test_a_post_whose_record_fails_stays_kept_for_a_later_pass(
    forms: tuple[Workspace, Starlette], smtp_server: ScriptedSmtpServer, broken: str  # noqa: F811
) -> None:
    workspace, app = forms
    with workspace.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {broken} RENAME TO {broken}_away"))
    with running(app) as base:
        assert subscribe(base).status_code == 200  # kept before the answer: the answer stands
        deadline = time.monotonic() + 5
        while kept.count(workspace.engine) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # the record's try, and its failure, behind the answer
    assert kept.count(workspace.engine) == 1
    with workspace.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {broken}_away RENAME TO {broken}"))
    workspace.clock.advance(kept.LEFT_AFTER * 2)
    assert asyncio.run(FormRoutes(workspace).record_leftovers()) == 1
    assert status(workspace) == "pending"
    assert len(received(smtp_server, 1)) == 1
