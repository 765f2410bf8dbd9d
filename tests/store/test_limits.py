"""Token buckets in the database (store/limits.py), on SQLite and PostgreSQL: exact arithmetic
on explicit times, and rows that go once their bucket is full again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select

from mailer.store.engine import open_database, reading
from mailer.store.limits import (
    STRICT_FOR,
    Limit,
    SharedLimits,
    forget_full,
    refill,
    take,
    waiting,
)
from mailer.store.tables import shared_limits

T0 = 1_800_000_000.0  # epoch seconds (2027-01-15): explicit, never the wall clock
FIVE_A_MINUTE = Limit(rate=5 / 60, burst=5)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    opened = open_database(database_url)
    yield opened
    opened.dispose()


def rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(shared_limits)) or 0)


def test_a_bucket_gives_its_burst_then_one_token_per_interval(engine: Engine) -> None:
    with engine.begin() as connection:
        taken = [take(connection, "ip", FIVE_A_MINUTE, 1, T0) for _ in range(6)]
        assert [t.granted for t in taken] == [1, 1, 1, 1, 1, 0]
        assert taken[-1].wait == pytest.approx(12.0)
        assert take(connection, "ip", FIVE_A_MINUTE, 1, T0 + 11.9).granted == 0
        assert take(connection, "ip", FIVE_A_MINUTE, 1, T0 + 12.0).granted == 1
        assert take(connection, "other", FIVE_A_MINUTE, 1, T0).granted == 1  # its own bucket
        assert take(connection, "ip", FIVE_A_MINUTE, 1, T0 + 3600).granted == 1  # never above 5
        assert take(connection, "ip", FIVE_A_MINUTE, 9, T0 + 3600).granted == 4


def test_a_take_of_many_gets_what_is_left_and_says_when_more_comes(engine: Engine) -> None:
    limit = Limit(rate=10.0, burst=10.0)
    with engine.begin() as connection:
        assert take(connection, "send", limit, 4, T0).granted == 4
        assert take(connection, "send", limit, 4, T0).granted == 4
        last = take(connection, "send", limit, 4, T0)
        assert last.granted == 2 and last.wait == pytest.approx(0.1)
        assert take(connection, "send", limit, 4, T0 + 0.25).granted == 2  # 2.5 tokens held


def test_full_buckets_are_deleted_and_a_refilled_bucket_gives_again(engine: Engine) -> None:
    resend = Limit(rate=1 / 600, burst=1)  # once per 10 minutes
    with engine.begin() as connection:
        assert take(connection, "confirm:1", resend, 1, T0).granted == 1
        assert take(connection, "confirm:1", resend, 1, T0 + 599).granted == 0
        refill(connection, "confirm:1")  # the send failed: the token goes back
        assert take(connection, "confirm:1", resend, 1, T0 + 599).granted == 1
        take(connection, "ip", FIVE_A_MINUTE, 1, T0)
        assert forget_full(connection, T0 + 11) == 0
        assert forget_full(connection, T0 + 12) == 1  # "ip" is full again: nothing to keep
    assert rows(engine) == 1


def test_shared_limits_sweep_full_buckets_once_a_minute(engine: Engine) -> None:
    limits = SharedLimits(engine)
    one = Limit(rate=1.0, burst=1.0)
    limits.take({f"b{n}": (one, 1) for n in range(3)}, T0)
    assert rows(limits.engine) == 3
    limits.take({"c": (one, 1)}, T0 + 30)  # full since T0 + 1, but the sweep waits a minute
    assert rows(limits.engine) == 4
    limits.take({"d": (one, 1)}, T0 + 60)
    assert rows(limits.engine) == 1


def test_on_sqlite_the_buckets_have_a_file_of_their_own(database_url: str) -> None:
    engine = open_database(database_url)
    limits = SharedLimits(engine)
    if engine.dialect.name == "sqlite":  # its write lock is not the database's
        assert limits.engine.url.database is not None
        assert limits.engine.url.database.endswith("mailer.limits.db")
    else:
        assert limits.engine is engine
    with engine.begin() as connection:  # a writer holds the database's lock...
        connection.execute(shared_limits.delete())
        taken = limits.take({"ip": (FIVE_A_MINUTE, 1)}, T0)  # ...and the bucket still answers
    assert taken["ip"].granted == 1
    engine.dispose()


def test_processes_that_disagree_share_the_bucket_at_the_lower_rate(engine: Engine) -> None:
    strict, loose = Limit(rate=10.0, burst=10.0), Limit(rate=100.0, burst=100.0)
    with engine.begin() as connection:
        assert take(connection, "send", strict, 10, T0).granted == 10
        overruled = take(connection, "send", loose, 50, T0)
        assert (overruled.granted, overruled.rate) == (0, 10.0)  # refilled at 10/s, not 100/s
        assert overruled.wait == pytest.approx(0.1)
        assert forget_full(connection, T0 + 1) == 0  # full again, but its limit still holds
        later = take(connection, "send", loose, 50, T0 + 1)
        assert (later.granted, later.rate) == (10, 10.0)  # a second at 10/s
        # The loose process's takes do not extend the strict one's claim: STRICT_FOR after
        # the strict process last took, its rate holds no more.
        freed = take(connection, "send", loose, 50, T0 + STRICT_FOR + 0.5)
        assert (freed.granted, freed.rate) == (50, 100.0)
        # Back, the strict process finds at most its own burst, and holds the other to it.
        assert take(connection, "send", strict, 50, T0 + STRICT_FOR + 0.5).granted == 10
        again = take(connection, "send", loose, 50, T0 + STRICT_FOR + 1.5)
        assert (again.granted, again.rate) == (10, 10.0)
    with reading(engine) as connection:  # the read-only wait counts at the lower rate too
        assert waiting(connection, "send", loose, T0 + STRICT_FOR + 1.5) == pytest.approx(0.1)


def test_a_bucket_file_from_before_the_rate_columns_gets_them(tmp_path: Path) -> None:
    old = create_engine(f"sqlite:///{tmp_path / 'mailer.limits.db'}")
    with old.begin() as connection:  # the table as migration 0020 made it
        connection.exec_driver_sql(
            "CREATE TABLE shared_limits (bucket VARCHAR(200) NOT NULL PRIMARY KEY, tokens FLOAT "
            "NOT NULL, refilled_at FLOAT NOT NULL, granted INTEGER NOT NULL, full_at FLOAT "
            "NOT NULL) WITHOUT ROWID")  # fmt: skip
        connection.exec_driver_sql(
            f"INSERT INTO shared_limits VALUES ('send', 0, {T0}, 10, {T0 + 1})"
        )
    old.dispose()
    engine = open_database(f"sqlite:///{tmp_path / 'mailer.db'}")
    limits = SharedLimits(engine)
    taken = limits.take({"send": (Limit(rate=10.0, burst=10.0), 9)}, T0 + 0.5)
    assert (taken["send"].granted, taken["send"].rate) == (5, 10.0)  # the old row's tokens
    with limits.engine.connect() as connection:
        row = connection.execute(select(shared_limits)).one()
    assert (row.rate, row.burst, row.strict_until) == (10.0, 10.0, T0 + 0.5 + STRICT_FOR)
    engine.dispose()
