"""Score rules awarded once whatever runs at the same time, and when they come to hold;
lifecycle stages applied at import and by the tick's pass."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, create_engine, text

from mailer.campaigns.activity import advance_stages
from mailer.campaigns.engine import tick
from mailer.campaigns.score_rules import award_rules
from mailer.cli import cli
from mailer.contacts.events import record_event
from mailer.store.tables import awarded_rules
from mailer.workspace import Workspace
from tests.campaigns.test_engine import MONDAY, open_shop
from tests.campaigns.test_lifecycle import RULES, who
from tests.conftest import write_csv
from tests.helpers import count, run_import

STAGED = RULES.replace("customer = 'event \"purchased\"'", "customer = 'orders >= 1'")
EVENT_RULE = RULES.replace("'orders >= 3' = 10", "'event \"purchased\"' = 7")


@pytest.fixture
def shop(tmp_path: Path, environ: dict[str, str]) -> Iterator[Workspace]:
    yield from open_shop(tmp_path, environ, RULES)


@pytest.fixture
def staged(tmp_path: Path, environ: dict[str, str]) -> Iterator[Workspace]:
    yield from open_shop(tmp_path, environ, STAGED)


def _waiting_in_a_thread(engine: Engine, work: Callable[[Connection], Any],
                         watching: Engine) -> threading.Thread:  # fmt: skip
    """Run `work` in a transaction of `engine` in a thread of its own; return the thread once
    that transaction waits on a lock (or has finished without waiting), as `watching` sees."""
    pids: list[int] = []
    started = threading.Event()

    def run() -> None:
        with engine.begin() as connection:
            pids.append(connection.scalar(text("SELECT pg_backend_pid()")))
            started.set()
            work(connection)

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    with watching.connect() as watcher:
        while thread.is_alive():
            waiting = watcher.scalar(text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                                          "WHERE pid = :pid"), {"pid": pids[0]})  # fmt: skip
            watcher.rollback()
            if waiting:
                break
    return thread


def test_two_overlapping_ticks_on_postgresql_award_each_rule_once(
    shop: Workspace, database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite lets one writer at a time: ticks cannot overlap")
    run_import(shop, write_csv(tmp_path / "o.csv", "email,orders\nada@example.com,5\n"
                               "bob@example.com,4\nken@example.com,1\n"), "newsletter")  # fmt: skip
    other = create_engine(database_url)  # the second daemon: its own pool and connections
    awarded: list[int] = []
    first = shop.engine.connect()
    first.begin()
    awarded.append(award_rules(first, shop.settings, MONDAY))  # not yet committed

    def second_tick(connection: Connection) -> None:
        awarded.append(award_rules(connection, shop.settings, MONDAY + timedelta(seconds=1)))

    thread = _waiting_in_a_thread(other, second_tick, shop.engine)  # it waits on our award
    first.commit()
    first.close()
    thread.join()
    other.dispose()
    assert who(shop, "score >= 10", MONDAY) == {"ada", "bob"}
    assert who(shop, "score > 10", MONDAY) == set()  # not 20
    assert sorted(awarded) == [0, 2]
    assert count(shop, awarded_rules) == 2


def test_a_rule_met_through_an_event_is_awarded_at_the_next_tick(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    for shop in open_shop(tmp_path, environ, EVENT_RULE):
        hour = MONDAY + timedelta(hours=1)  # an hour after the import: the rows are old news
        tick(shop.engine, shop.settings, hour)
        with shop.engine.begin() as connection:  # the contact row itself does not change
            record_event(connection, "bob@example.com", "purchased", hour + timedelta(minutes=1))
        tick(shop.engine, shop.settings, hour + timedelta(minutes=5))
        tick(shop.engine, shop.settings, hour + timedelta(minutes=10))
        later = hour + timedelta(minutes=10)
        assert who(shop, "score > 6.9", later) == {"bob"}
        assert who(shop, "score > 7.1", later) == set()  # once, not at every tick


def test_mailer_import_puts_contacts_in_their_stage_at_once(
    staged: Workspace, environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = "".join(f"buyer{n}@example.com,{n % 3 + 1}\n" for n in range(8))
    write_csv(tmp_path / "buyers.csv", "email,orders\n" + rows + "ann@example.com,0\n")
    monkeypatch.chdir(tmp_path / "shop")
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "buyers.csv"), "--list",
                                      "newsletter"], env=environ)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert who(staged, 'stage = "customer"', MONDAY) == {f"buyer{n}" for n in range(8)}
    assert "ann" in who(staged, 'stage = "lead"', MONDAY)


def test_a_tick_moves_stages_that_no_event_moved(staged: Workspace, tmp_path: Path) -> None:
    run_import(staged, write_csv(tmp_path / "o.csv", "email,orders\nada@example.com,2\n"),
               "newsletter")  # fmt: skip  # no stage hook: as a database filled by other means
    tick(staged.engine, staged.settings, MONDAY)
    assert who(staged, 'stage = "customer"', MONDAY) == {"ada"}
    assert who(staged, 'stage = "lead"', MONDAY) == {"bob", "ken"}


def test_a_rule_that_holds_without_any_change_is_awarded_by_the_hourly_pass(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    tagged = RULES.replace("'orders >= 3' = 10", "'tagged \"vip\"' = 5")
    for shop in open_shop(tmp_path, environ, tagged):
        first = MONDAY + timedelta(minutes=1)  # after the import
        tick(shop.engine, shop.settings, first)  # a look at every contact
        with shop.engine.begin() as connection:  # a raw tag: neither the row nor an event
            connection.execute(text("INSERT INTO contact_tags (contact_id, tag) SELECT id, 'vip' "
                                    "FROM contacts WHERE email = 'ken@example.com'"))  # fmt: skip
        soon = first + timedelta(minutes=5)
        tick(shop.engine, shop.settings, soon)  # only what changed: nothing
        assert who(shop, "score > 4.9", soon) == set()
        hour = first + timedelta(hours=1)
        tick(shop.engine, shop.settings, hour)  # the hourly look at every contact
        assert who(shop, "score > 4.9", hour) == {"ken"}


def test_the_ticks_stage_pass_locks_contacts_in_id_order_on_postgresql(
    staged: Workspace, database_url: str, tmp_path: Path
) -> None:
    """As /events and the pixel writer lock the contacts they score (store/locking.py): a
    transaction holding the first contact makes the stage pass wait before it locks any
    other, where an UPDATE alone locks in the order it scans (here the first contact last)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: the tick locks the whole database")
    rows = "".join(f"buyer{n}@example.com,2\n" for n in range(20))  # customers, by the rule
    run_import(staged, write_csv(tmp_path / "o.csv", "email,orders\n" + rows), "newsletter")
    engine = staged.engine
    with engine.begin() as connection:
        first, last = connection.execute(text("SELECT min(id), max(id) FROM contacts "
                                              "WHERE email LIKE 'buyer%'")).one()  # fmt: skip
        # Its new row version is scanned after every other contact's.
        connection.execute(text("UPDATE contacts SET stage = NULL WHERE id = :id"), {"id": first})
    holder = engine.connect()
    holder.begin()
    holder.execute(text("SELECT id FROM contacts WHERE id = :id FOR NO KEY UPDATE"), {"id": first})

    def stage_pass(connection: Connection) -> None:
        advance_stages(connection, staged.settings, MONDAY)

    thread = _waiting_in_a_thread(engine, stage_pass, engine)
    try:
        assert thread.is_alive()  # waiting for the first contact
        with engine.begin() as other:  # the last contact is not locked yet: taken at once
            other.execute(text("SELECT id FROM contacts WHERE id = :id FOR NO KEY UPDATE NOWAIT"),
                          {"id": last})  # fmt: skip
    finally:
        holder.commit()
        holder.close()
        thread.join()
    assert who(staged, 'stage = "customer"', MONDAY) >= {f"buyer{n}" for n in range(20)}
