"""New runs whose first step is due at once are decided and written in batches, a batch decided
while a thread writes the one before (engine._enroll_due), its facts read before that write.
Over several batches the rows must be exactly those of enrolling first and advancing afterwards
(the old way, taken when a frequency cap is on: one no one reaches). A mix of every branch:
consent missing, pending, withdrawn, suppressed, a goal reached, a reply, A/B steps, a send
window, a delay, a segment trigger. SQLite and PostgreSQL."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select

from mailer.campaigns import engine
from mailer.campaigns.engine import tick
from mailer.campaigns.enrollment import enrollment_ids
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
BATCH = 4  # new runs per batch in these tests: each campaign's runs take several batches

SETTINGS = """
[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[segments]
anas = 'email contains "ana"'

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
variants.C.subject = "Welcome"
variants.C.weight = 2

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

[campaigns.spotlight]
kind = "sequence"
list = "newsletter"
trigger = 'enters segment "anas"'

[[campaigns.spotlight.steps]]
name = "look"
template = "spotlight/1"
subject = "A look"
variants.B.subject = "Another look"
"""

ZONES = ("Europe/London", "Asia/Tokyo", "America/New_York")


def people() -> str:
    """Twenty-four people: every fourth without consent, every fifth not confirmed."""
    lines = ["email,timezone,consent_at,consent_confirmed_at"]
    for number in range(24):
        consent = "" if number % 4 == 3 else "2026-11-23T09:00Z"
        confirmed = "" if number % 5 == 4 or not consent else "2026-11-23T09:05Z"
        name = "ana" if number % 3 == 0 else "bob"
        lines.append(f"{name}{number}@example.com,{ZONES[number % 3]},{consent},{confirmed}")
    return "\n".join(lines) + "\n"


def open_shop(root: Path, environ: dict[str, str], extra: str = "",
              listed: str | None = None) -> Workspace:  # fmt: skip
    """The shop with everyone (or the `listed` CSV) on the list; of them, one bought, one
    replied, one complained (suppressed) and one withdrew after joining."""
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(SETTINGS) + textwrap.dedent(extra))
    workspace = Workspace(load_settings(root / "settings.toml", environ=environ),
                          FrozenClock(MONDAY))  # fmt: skip
    run_import(workspace, write_csv(root / "news.csv", listed or people()), "newsletter")
    moment = MONDAY + timedelta(seconds=30)
    with workspace.engine.begin() as connection:
        ids = {row.email: row.id for row in connection.execute(select(contacts))}
        connection.execute(insert(events), [
            {"contact_id": ids["bob5@example.com"], "kind": "website", "name": "purchased",
             "properties": {}, "occurred_at": moment},
            {"contact_id": ids["ana6@example.com"], "kind": "website", "name": "replied",
             "properties": {"campaign": "welcome"}, "occurred_at": moment},
        ])  # fmt: skip
        suppress(connection, address_hash=address_hash(workspace.key, "bob10@example.com"),
                 email="bob10@example.com", reason="complained", now=moment)  # fmt: skip
        withdraw(connection, workspace.key, "bob13@example.com", workspace.double_opt_in,
                 moment, list_name="newsletter")  # fmt: skip
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
            select(contacts.c.email, *[c for c in outbox.c if c.name not in ("id", "contact_id")])
            .join(contacts, contacts.c.id == outbox.c.contact_id)
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


@pytest.fixture
def shops(tmp_path: Path, environ: dict[str, str], other_environ: dict[str, str],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Workspace, Workspace]]:  # fmt: skip
    """The shop twice, each in a database of its own: new runs decided in batches of BATCH,
    and the old way (a cap no one reaches)."""
    monkeypatch.setattr(engine, "BATCH", BATCH)
    batched = open_shop(tmp_path / "batched", environ)
    old_way = open_shop(tmp_path / "old-way", other_environ,
                        '[engine]\nfrequency_cap = "99 per 1d"\n')  # fmt: skip
    yield batched, old_way
    batched.close()
    old_way.close()


@contextmanager
def outbox_inserts(workspace: Workspace) -> Iterator[list[str]]:
    """The statements inserting outbox rows meanwhile (a COPY of many rows passes unseen)."""
    seen: list[str] = []

    def inserting(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            seen.append(statement)

    event.listen(workspace.engine, "before_cursor_execute", inserting)
    try:
        yield seen
    finally:
        event.remove(workspace.engine, "before_cursor_execute", inserting)


def test_new_runs_decided_in_batches_write_the_rows_of_the_old_way(
    shops: tuple[Workspace, Workspace],
) -> None:
    batched, old_way = shops
    for number, moment in enumerate([MONDAY + timedelta(minutes=1), MONDAY + timedelta(days=3)]):
        with outbox_inserts(batched) as inserts:
            new = tick(batched.engine, batched.settings, moment).as_dict()
        old = tick(old_way.engine, old_way.settings, moment).as_dict()
        assert new == old
        assert written(batched) == written(old_way)
        if number == 0:  # several batches of each campaign, every branch of the first step
            assert len(inserts) >= 24 // BATCH
            assert new["enrolled"] == 3 * 24 + 8
            assert all(new[count] > 0 for count in
                       ("queued", "converted", "exited", "postponed", "completed"))  # fmt: skip
            runs, messages = written(batched)
            reasons = {(run.email, run.campaign): run.reason for run in runs}
            assert reasons["ana3@example.com", "welcome"] == "no consent (none)"
            assert reasons["bob13@example.com", "welcome"] == "no consent (withdrawn)"
            assert reasons["bob4@example.com", "welcome"] == "consent pending confirmation"
            assert reasons["bob10@example.com", "welcome"] == "suppressed"
            variants = {m.variant for m in messages if m.campaign == "welcome"}
            assert variants == {None, "B", "C"}


def test_consent_that_lapses_in_the_tick_stops_its_new_runs_as_the_old_way(
    tmp_path: Path, environ: dict[str, str], other_environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The tick's transaction expires consent given two years ago before it enrolls: the new
    runs' facts must see that (on PostgreSQL they are then not read on another connection,
    which would not)."""
    monkeypatch.setattr(engine, "BATCH", BATCH)
    lapsing = {"MAILER_LISTS__NEWSLETTER__EXPIRES_AFTER": "730d"}
    listed = people().replace("2026-11-23T09:00Z,2026-11-23T09:05Z",
                              "2024-11-01T09:00Z,2024-11-01T09:05Z", 12)  # fmt: skip
    batched = open_shop(tmp_path / "batched", environ | lapsing, listed=listed)
    old_way = open_shop(tmp_path / "old-way", other_environ | lapsing,
                        '[engine]\nfrequency_cap = "99 per 1d"\n', listed)  # fmt: skip
    try:
        moment = MONDAY + timedelta(minutes=1)
        new = tick(batched.engine, batched.settings, moment).as_dict()
        old = tick(old_way.engine, old_way.settings, moment).as_dict()
        assert new == old
        assert written(batched) == written(old_way)
        runs, _ = written(batched)
        first = {run.email: run.reason for run in runs if run.campaign == "welcome"}
        assert first["ana0@example.com"] == "no consent (none)"  # expired: no consent now
    finally:
        batched.close()
        old_way.close()


def leave_a_message(workspace: Workspace, email: str) -> None:
    """An outbox row for `email`'s first welcome message in cycle 0, of no enrollment: the
    key a new run's first message would take."""
    with workspace.engine.begin() as connection:
        contact_id = connection.scalar(select(contacts.c.id).where(contacts.c.email == email))
        connection.execute(insert(outbox).values(
            campaign="welcome", step="hello", contact_id=contact_id, cycle=0, status="sent",
            queued_at=MONDAY - timedelta(days=1), sent_at=MONDAY - timedelta(days=1)))  # fmt: skip


def test_a_batch_whose_write_fails_loses_and_doubles_no_row(
    shops: tuple[Workspace, Workspace],
) -> None:
    """A key taken in the second batch: that batch is left to the advance, the batches around
    it are written as decided, and the rows are those of the old way."""
    batched, old_way = shops
    for shop in (batched, old_way):
        leave_a_message(shop, "ana6@example.com")
    moment = MONDAY + timedelta(minutes=1)
    new = tick(batched.engine, batched.settings, moment).as_dict()
    old = tick(old_way.engine, old_way.settings, moment).as_dict()
    assert new == old
    assert written(batched) == written(old_way)
    with batched.engine.connect() as connection:
        runs = connection.execute(
            select(enrollments.c.campaign, enrollments.c.contact_id, func.count())
            .group_by(enrollments.c.campaign, enrollments.c.contact_id)
        ).all()  # fmt: skip
        kept = connection.execute(
            select(outbox.c.status, outbox.c.enrollment_id)
            .join(contacts, contacts.c.id == outbox.c.contact_id)
            .where(contacts.c.email == "ana6@example.com", outbox.c.campaign == "welcome")
        ).all()  # fmt: skip
    assert len(runs) == 3 * 24 + 8 and {count for *_, count in runs} == {1}
    assert kept == [("sent", None)]


def test_new_enrollment_ids_ascend_and_the_table_goes_on_after_them(
    shops: tuple[Workspace, Workspace],
) -> None:
    batched, _ = shops
    with batched.engine.begin() as connection:
        contact_ids = connection.scalars(select(contacts.c.id).order_by(contacts.c.id)).all()
        ids = enrollment_ids(connection, 3)
        connection.execute(insert(enrollments), [
            {"id": enrollment_id, "campaign": "later", "contact_id": contact_id, "cycle": 0,
             "status": "active", "entered_at": MONDAY, "last_position": -1, "due_at": MONDAY}
            for enrollment_id, contact_id in zip(ids, contact_ids, strict=False)
        ])  # fmt: skip
        following = connection.scalar(
            insert(enrollments).values(campaign="later", contact_id=contact_ids[3], cycle=0,
                                       status="active", entered_at=MONDAY, last_position=-1)
            .returning(enrollments.c.id)
        )  # fmt: skip
    assert len(ids) == 3 and ids == sorted(set(ids))
    assert following is not None and following > ids[-1]


def test_the_tick_uses_the_connection_in_one_thread_at_a_time(
    shops: tuple[Workspace, Workspace],
) -> None:
    """While the thread writes a batch (its savepoint open), the tick, deciding the next
    batch, sends no statement of its own on that connection: deciding new runs reads nothing.
    On PostgreSQL it reads the next batch's facts on another connection (nothing was written
    before the first campaign's new runs but trigger cursors), so it may read meanwhile."""
    batched, _ = shops
    sent: list[tuple[str, int, str]] = []  # (thread, connection, statement), in the order sent

    def seen(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append((threading.current_thread().name, id(connection.connection.dbapi_connection),
                     statement.lstrip().upper()))  # fmt: skip

    event.listen(batched.engine, "before_cursor_execute", seen)
    try:
        tick(batched.engine, batched.settings, MONDAY + timedelta(minutes=1))
    finally:
        event.remove(batched.engine, "before_cursor_execute", seen)
    writer = [used for thread, used, _ in sent if thread.startswith("mailer-new-runs")]
    assert len(writer) >= 24 // BATCH and len(set(writer)) == 1
    writing = False
    for thread, used, statement in sent:
        if thread.startswith("mailer-new-runs"):
            writing = writing or statement.startswith("SAVEPOINT")
            writing = writing and not statement.startswith(("RELEASE", "ROLLBACK"))
        elif writing:
            assert used != writer[0], f"sent while the thread writes: {statement[:80]}"
    # On PostgreSQL the facts are read on another connection (whether a read falls inside a
    # write is the scheduler's choice, so that is not asserted); on SQLite, on the one.
    readers = {
        used
        for thread, used, statement in sent
        if not thread.startswith("mailer-new-runs") and "FROM CONTACTS" in statement
    }
    postgresql = batched.engine.dialect.name == "postgresql"
    assert bool(readers - {writer[0]}) == postgresql
