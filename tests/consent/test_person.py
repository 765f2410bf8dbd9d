from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select, text

from mailer.campaigns.engine import tick
from mailer.consent.person import (
    consent_history,
    consent_overview,
    erase_person,
    export_person,
    withdraw,
)
from mailer.contacts.events import record_event
from mailer.errors import MailerError, UnknownContactError
from mailer.store.tables import (
    contacts,
    enrollments,
    events,
    outbox,
    suppressions,
    website_contact_rollups,
)
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import count, run_import


@pytest.fixture
def ada(workspace: Workspace, tmp_path: Path) -> Workspace:
    path = write_csv(
        tmp_path / "news.csv",
        """
        email,first_name,plan,tags,consent_at,consent_confirmed_at,consent_ip,consent_user_agent
        ada@example.com,Ada,gold,vip,2026-03-01T09:00Z,2026-03-01T09:05Z,203.0.113.9,Firefox
    """,
    )
    run_import(workspace, path, "newsletter")
    path = write_csv(
        tmp_path / "leads.csv",
        """
        Email Address,consent_at
        ada@example.com,2026-04-01
    """,
    )
    run_import(workspace, path, "leads")
    return workspace


def test_show_lists_status_since_and_entry_per_list(ada: Workspace) -> None:
    with ada.engine.connect() as connection:
        overview = consent_overview(connection, ada.key, "ADA@example.com", ["newsletter", "leads"])
    assert overview.as_dict()["lists"] == [
        {"list": "newsletter", "status": "confirmed", "since": "2026-03-01T09:05:00+00:00",
         "entry_id": 2},
        {"list": "leads", "status": "granted", "since": "2026-04-01T00:00:00+00:00",
         "entry_id": 3},
    ]  # fmt: skip
    assert overview.suppression is None


def test_unknown_and_invalid_addresses_get_clear_errors(workspace: Workspace) -> None:
    with workspace.engine.connect() as connection:
        with pytest.raises(UnknownContactError, match=r"nobody@example\.com: no contact"):
            consent_overview(connection, workspace.key, "nobody@example.com", [])
        with pytest.raises(MailerError, match="is not an email address"):
            consent_history(connection, workspace.key, "not-an-address")


def test_withdraw_one_list_keeps_the_others(ada: Workspace) -> None:
    with ada.engine.begin() as connection:
        withdraw(connection, ada.key, "ada@example.com", ada.double_opt_in, ada.clock.now(),
                 list_name="leads")  # fmt: skip
        overview = consent_overview(connection, ada.key, "ada@example.com", [])
    assert {r.list: r.status for r in overview.lists} == {
        "newsletter": "confirmed", "leads": "withdrawn",
    }  # fmt: skip
    assert overview.suppression is None


def test_withdraw_everything_suppresses(ada: Workspace) -> None:
    with ada.engine.begin() as connection:
        ids = withdraw(connection, ada.key, "ada@example.com", ada.double_opt_in, ada.clock.now())
        overview = consent_overview(connection, ada.key, "ada@example.com", [])
        history = consent_history(connection, ada.key, "ada@example.com")
    assert {r.list: r.status for r in overview.lists} == {
        "newsletter": "withdrawn", "leads": "withdrawn",
    }  # fmt: skip
    assert overview.suppression is not None
    assert (overview.suppression.reason, overview.suppression.entry_id) == ("unsubscribed", ids[-1])
    assert [(h["list"], h["action"]) for h in history[-3:]] == [
        ("leads", "withdrawn"), ("newsletter", "withdrawn"), ("*", "withdrawn"),
    ]  # fmt: skip


def test_withdrawing_again_appends_nothing_whoever_asks(ada: Workspace) -> None:
    """The operator, a hard bounce and the page all go through withdraw: a list already left,
    or an address already suppressed, records nothing more (the ledger's lock makes it so at
    the same moment too: tests/tracking/test_withdraw_once.py)."""
    now = ada.clock.now()
    with ada.engine.begin() as connection:
        first = withdraw(connection, ada.key, "ada@example.com", ada.double_opt_in, now,
                         list_name="leads")  # fmt: skip
        again = withdraw(connection, ada.key, "ada@example.com", ada.double_opt_in, now,
                         list_name="leads")  # fmt: skip
        everything = withdraw(connection, ada.key, "ada@example.com", ada.double_opt_in, now)
        bounced = withdraw(connection, ada.key, "ada@example.com", ada.double_opt_in, now,
                           source="bounce", reason="hard_bounce")  # fmt: skip
        history = consent_history(connection, ada.key, "ada@example.com")
    assert len(first) == 1 and again == [] and len(everything) == 2 and bounced == []
    assert [(h["list"], h["action"]) for h in history if h["action"] == "withdrawn"] == [
        ("leads", "withdrawn"), ("newsletter", "withdrawn"), ("*", "withdrawn"),
    ]  # fmt: skip


def _website_counted(workspace: Workspace, email: str, name: str, at: datetime) -> None:
    """A count of the person's website events as retention rolls them up."""
    with workspace.engine.begin() as connection:
        contact = connection.scalar(select(contacts.c.id).where(contacts.c.email == email))
        connection.execute(insert(website_contact_rollups).values(
            contact_id=contact, name=name, day=at.date().isoformat(), events=3, last_at=at))


def test_export_holds_everything_about_the_person(ada: Workspace) -> None:
    long_ago = ada.clock.now() - timedelta(days=500)
    _website_counted(ada, "ada@example.com", "viewed_product", long_ago)
    with ada.engine.connect() as connection:
        data = export_person(connection, ada.key, "ada@example.com")
    json.dumps(data)  # JSON-ready
    assert data["contact"]["first_name"] == "Ada"
    assert data["contact"]["attributes"] == {"plan": "gold"}
    assert data["tags"] == ["lead", "vip"]  # "lead" from [lists.leads] tags
    assert {m["list"] for m in data["lists"]} == {"newsletter", "leads"}
    assert data["consent"][0]["evidence"]["ip"] == "203.0.113.9"
    assert data["consent"][0]["evidence"]["user_agent"] == "Firefox"
    day = long_ago.date().isoformat()
    assert data["website_counted"] == [{"name": "viewed_product", "day": day, "events": 3,
                                        "last_at": long_ago.isoformat()}]  # fmt: skip


def test_erase_deletes_personal_data_everywhere_and_keeps_a_hashed_suppression(
    ada: Workspace,
) -> None:
    with ada.engine.begin() as connection:
        record_event(connection, "ada@example.com", "viewed_product", ada.clock.now(),
                     {"note": "gold"})  # fmt: skip
    tick(ada.engine, ada.settings, ada.clock.now())  # enrollments and outbox rows too
    _website_counted(ada, "ada@example.com", "viewed_product", ada.clock.now())
    assert (count(ada, events), count(ada, enrollments), count(ada, outbox)) == (1, 1, 1)
    with ada.engine.begin() as connection:
        withdraw(connection, ada.key, "ada@example.com", ada.double_opt_in, ada.clock.now())
        erase_person(connection, ada.key, "ada@example.com", ada.clock.now())
    with ada.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                dumped = json.dumps([str(value) for value in row]).lower()
                for personal in ("ada@example.com", "203.0.113.9", "firefox", "gold"):
                    assert personal not in dumped, f"{personal} left in {table}"
        suppression = connection.execute(select(suppressions)).one()
        history = consent_history(connection, ada.key, "ada@example.com")
        overview = consent_overview(connection, ada.key, "ada@example.com", ["newsletter"])
    assert (suppression.email, suppression.reason) == (None, "unsubscribed")
    for table in (events, enrollments, website_contact_rollups):
        assert count(ada, table) == 0, table.name
    assert count(ada, outbox, outbox.c.status == "skipped", outbox.c.contact_id.is_(None)) == 1
    assert history[-1]["action"] == "erased"
    assert all(entry["evidence"] is None for entry in history)
    assert overview.contact_id is None and overview.suppression is not None


def test_erasing_an_unknown_address_still_suppresses_it(workspace: Workspace) -> None:
    with workspace.engine.begin() as connection:
        erase_person(connection, workspace.key, "stranger@example.com", workspace.clock.now())
        overview = consent_overview(connection, workspace.key, "stranger@example.com", [])
    assert overview.suppression is not None and overview.suppression.reason == "erased"
