"""A tick that enrolls contacts whose first step is due at once decides that step as it enrolls
and writes each enrollment once, already at its first step (engine._enroll): the rows must be
exactly those of enrolling first and advancing afterwards. The other way is still taken when
the frequency cap is on (it weighs the new rows against the enrollments table), so a cap no
one reaches gives the rows of the old way in the same test. SQLite and PostgreSQL."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.consent.person import withdraw
from mailer.consent.suppressions import suppress
from mailer.contacts.addresses import address_hash
from mailer.store.tables import contacts, enrollments, events, outbox
from mailer.workspace import Workspace
from tests.conftest import fresh_schema, write_csv
from tests.helpers import run_import

MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

SETTINGS = """
[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[lists.newsletter]
title = "Newsletter"
double_opt_in = true

[campaigns.welcome]
kind = "sequence"
list = "newsletter"
trigger = 'joins list "newsletter"'
goal = 'event "purchased"'
exit_on_reply = true
enroll_existing = true

[[campaigns.welcome.steps]]
name = "hello"
template = "welcome/1"
subject = "Hello"
variants.B.subject = "Hi there"

[[campaigns.welcome.steps]]
name = "tips"
template = "welcome/2"
subject = "Tips"
delay = "2 days"

[campaigns.windowed]
kind = "sequence"
list = "newsletter"
trigger = 'joins list "newsletter"'
enroll_existing = true

[[campaigns.windowed.steps]]
name = "only"
template = "windowed/1"
subject = "Office hours"
send_window = "09:00-18:00 weekdays"

[campaigns.later]
kind = "sequence"
list = "newsletter"
trigger = 'joins list "newsletter"'
enroll_existing = true

[[campaigns.later.steps]]
name = "first"
template = "later/1"
subject = "In an hour"
delay = "1h"
"""

PEOPLE = """
    email,timezone,consent_at,consent_confirmed_at
    ada@example.com,Europe/London,2026-11-23T09:00Z,2026-11-23T09:05Z
    ken@example.com,Asia/Tokyo,2026-11-23T09:00Z,2026-11-23T09:05Z
    bob@example.com,Europe/London,2026-11-23T09:00Z,
    cy@example.com,Europe/London,2026-11-23T09:00Z,2026-11-23T09:05Z
    dee@example.com,Europe/London,2026-11-23T09:00Z,2026-11-23T09:05Z
    eve@example.com,Europe/London,2026-11-23T09:00Z,2026-11-23T09:05Z
    fay@example.com,Europe/London,2026-11-23T09:00Z,2026-11-23T09:05Z
    gus@example.com,America/New_York,2026-11-23T09:00Z,2026-11-23T09:05Z
"""


def open_shop(root: Path, environ: dict[str, str], extra: str = "") -> Workspace:
    """The shop with everyone on the list: ada and gus plain, ken outside office hours in
    Tokyo, bob not confirmed, cy suppressed, dee bought after joining, eve replied, fay
    withdrew."""
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(SETTINGS) + textwrap.dedent(extra))
    workspace = Workspace(load_settings(root / "settings.toml", environ=environ),
                          FrozenClock(MONDAY))  # fmt: skip
    run_import(workspace, write_csv(root / "news.csv", PEOPLE), "newsletter")
    moment = MONDAY + timedelta(seconds=30)
    with workspace.engine.begin() as connection:
        ids = {row.email: row.id for row in connection.execute(select(contacts))}
        connection.execute(insert(events), [
            {"contact_id": ids["dee@example.com"], "kind": "website", "name": "purchased",
             "properties": {}, "occurred_at": moment},
            {"contact_id": ids["eve@example.com"], "kind": "website", "name": "replied",
             "properties": {"campaign": "welcome"}, "occurred_at": moment},
        ])  # fmt: skip
        suppress(connection, address_hash=address_hash(workspace.key, "cy@example.com"),
                 email="cy@example.com", reason="complained", now=moment)  # fmt: skip
        withdraw(connection, workspace.key, "fay@example.com", workspace.double_opt_in, moment,
                 list_name="newsletter")  # fmt: skip
    return workspace


def written(workspace: Workspace) -> tuple[list[Any], list[Any]]:
    """Every enrollment and outbox row, by contact, without the outbox's own id."""
    with workspace.engine.connect() as connection:
        runs = connection.execute(
            select(contacts.c.email, *[c for c in enrollments.c if c.name != "contact_id"])
            .join(contacts, contacts.c.id == enrollments.c.contact_id)
            .order_by(enrollments.c.campaign, contacts.c.email)
        ).all()  # fmt: skip
        messages = connection.execute(
            select(contacts.c.email, enrollments.c.campaign.label("run_of"),
                   *[c for c in outbox.c if c.name not in ("id", "contact_id", "enrollment_id")])
            .join(contacts, contacts.c.id == outbox.c.contact_id)
            .join(enrollments, enrollments.c.id == outbox.c.enrollment_id)
            .order_by(outbox.c.campaign, contacts.c.email)
        ).all()  # fmt: skip
    return list(runs), list(messages)


@pytest.fixture
def other_environ(environ: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """A second database of the same engine: another SQLite file, or another fresh schema."""
    url = environ["MAILER_DATABASE_URL"]
    if url.startswith("sqlite"):
        yield {**environ, "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
        return
    with fresh_schema() as other:
        yield {**environ, "MAILER_DATABASE_URL": other}


def both_ways(tmp_path: Path, environ: dict[str, str], other_environ: dict[str, str],
              moments: list[datetime]) -> Iterator[Any]:  # fmt: skip
    """Each tick's report and the rows after it, enrolled at once, and the old way (a cap no
    one reaches), each in a database of its own."""
    at_once = open_shop(tmp_path / "at-once", environ)
    old_way = open_shop(tmp_path / "old-way", other_environ,
                        '[engine]\nfrequency_cap = "99 per 1d"\n')  # fmt: skip
    try:
        for moment in moments:
            new = tick(at_once.engine, at_once.settings, moment).as_dict()
            old = tick(old_way.engine, old_way.settings, moment).as_dict()
            yield new, old, written(at_once), written(old_way)
    finally:
        at_once.close()
        old_way.close()


def test_enrolling_and_queueing_at_once_writes_the_rows_of_the_old_way(
    tmp_path: Path, environ: dict[str, str], other_environ: dict[str, str]
) -> None:
    moments = [MONDAY + timedelta(minutes=1), MONDAY + timedelta(hours=2)]
    ticks = both_ways(tmp_path, environ, other_environ, moments)
    for number, (new, old, rows, old_rows) in enumerate(ticks):
        assert new == old
        assert rows == old_rows
        if number == 0:  # every branch of the first step was taken
            assert new == {"enrolled": 24, "queued": 6, "converted": 1, "exited": 5,
                           "postponed": 4, "skipped": 0, "errors": 0, "completed": 3,
                           "expired": 0}  # fmt: skip
            runs, messages = rows
            by_person = {(row.email, row.campaign): (row.status, row.reason) for row in runs}
            assert by_person["dee@example.com", "welcome"] == (
                "converted",
                'goal reached: event "purchased"',
            )
            assert by_person["eve@example.com", "welcome"] == ("exited", "replied")
            assert by_person["cy@example.com", "welcome"] == ("exited", "suppressed")
            assert by_person["bob@example.com", "welcome"] == (
                "active",
                "consent pending confirmation",
            )
            assert by_person["ken@example.com", "windowed"] == (
                "active",
                "outside 09:00-18:00 weekdays (Asia/Tokyo)",
            )
            assert by_person["ada@example.com", "later"] == ("active", None)
            assert {(m.email, m.campaign, m.status) for m in messages} >= {
                ("ada@example.com", "welcome", "queued"),
                ("dee@example.com", "windowed", "queued"),
            }


def test_a_tick_enrolling_a_due_first_step_writes_each_enrollment_once(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    shop = open_shop(tmp_path / "shop", environ)
    statements: list[str] = []

    def seen(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    event.listen(shop.engine, "before_cursor_execute", seen)
    try:
        report = tick(shop.engine, shop.settings, MONDAY + timedelta(minutes=1))
    finally:
        event.remove(shop.engine, "before_cursor_execute", seen)
        shop.close()
    assert report.queued == 6
    # No enrollment is read back and updated: each is inserted as its first step left it.
    assert [s for s in statements if s.startswith("UPDATE ENROLLMENTS")] == []


def leave_a_message(workspace: Workspace, email: str) -> None:
    """An outbox row for `email`'s first welcome message in cycle 0, of no enrollment (as a
    run removed by hand would leave it): the key a new run's first message would take."""
    with workspace.engine.begin() as connection:
        contact_id = connection.scalar(select(contacts.c.id).where(contacts.c.email == email))
        connection.execute(insert(outbox).values(
            campaign="welcome", step="hello", contact_id=contact_id, cycle=0, status="sent",
            queued_at=MONDAY - timedelta(days=1), sent_at=MONDAY - timedelta(days=1)))  # fmt: skip


def test_a_first_message_whose_key_is_taken_gives_the_rows_of_the_old_way(
    tmp_path: Path, environ: dict[str, str], other_environ: dict[str, str]
) -> None:
    """New runs' rows go straight into the tables (no key can be taken, engine._enroll_due);
    if one is taken after all, the batch is left to the advance, which keeps the row there."""
    at_once = open_shop(tmp_path / "at-once", environ)
    old_way = open_shop(tmp_path / "old-way", other_environ,
                        '[engine]\nfrequency_cap = "99 per 1d"\n')  # fmt: skip
    try:
        for shop in (at_once, old_way):
            leave_a_message(shop, "ada@example.com")
        moment = MONDAY + timedelta(minutes=1)
        new = tick(at_once.engine, at_once.settings, moment).as_dict()
        old = tick(old_way.engine, old_way.settings, moment).as_dict()
        assert new == old
        assert written(at_once) == written(old_way)
        with at_once.engine.connect() as connection:
            kept = connection.execute(
                select(outbox.c.status, outbox.c.enrollment_id)
                .join(contacts, contacts.c.id == outbox.c.contact_id)
                .where(contacts.c.email == "ada@example.com", outbox.c.campaign == "welcome")
            ).all()
        assert kept == [("sent", None)]
    finally:
        at_once.close()
        old_way.close()
