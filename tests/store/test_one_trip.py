"""store.one_trip: a short transaction sent to PostgreSQL in one round trip (the delivery result
writer's commit), seen on the wire through a TCP hop that logs who spoke when; all of it or none
written; a failed statement and a server gone away raise as SQLAlchemy raises them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from mailer.store.bulk import Many
from mailer.store.engine import create_database_engine, upgrade
from mailer.store.one_trip import write_in_one_trip
from mailer.store.tables import outbox
from tests.conftest import NOW, POSTGRES_URL, fresh_schema
from tests.tcp_hop import LOOPBACK, TcpHop

pytestmark = pytest.mark.postgres


class HeldAnswers(TcpHop):
    """A TCP hop to the server that holds each of the server's answers for HOLD seconds and
    logs what passes: a client that waits for an answer sends again only after one was let
    through, one that does not has sent everything before the first is let through."""

    HOLD = 0.3

    def __init__(self, host: str, port: int) -> None:
        self.log: list[str] = []  # "client" (a chunk sent) or "answer" (one let through)
        super().__init__(host, port)

    def sent_after_an_answer(self) -> int:
        """Chunks the client sent after the first answer reached it (since the log was cleared)."""
        if "answer" not in self.log:
            return 0
        return self.log[self.log.index("answer") :].count("client")

    def passing(self, data: bytes, from_client: bool) -> None:
        if not from_client:
            time.sleep(self.HOLD)
        self.log.append("client" if from_client else "answer")


@pytest.fixture
def schema_url() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need MAILER_TEST_DATABASE_URL (set by .ci/run)")
    with fresh_schema() as url:
        engine = create_database_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture
def hop(schema_url: str) -> Iterator[tuple[HeldAnswers, str]]:
    url = make_url(schema_url)
    log = HeldAnswers(url.host or LOOPBACK, url.port or 5432)
    try:
        yield log, url.set(host=LOOPBACK, port=log.port).render_as_string(hide_password=False)
    finally:
        log.close()


SENT = update(outbox).where(outbox.c.id == bindparam("row_id")).values(status=bindparam("status"))
QUEUED = update(outbox).where(outbox.c.id == bindparam("row_id")).values(attempts=bindparam("n"))


def queue(connection: Any, count: int) -> None:
    connection.execute(insert(outbox), [
        {"id": n, "campaign": "welcome", "step": "hello", "cycle": n, "contact_id": None,
         "status": "sending", "queued_at": NOW, "send_after": NOW} for n in range(1, count + 1)
    ])  # fmt: skip


def test_begin_statements_and_commit_go_out_before_any_answer_comes_back(
    hop: tuple[HeldAnswers, str],
) -> None:
    log, url = hop
    engine = create_database_engine(url)
    try:
        with engine.begin() as connection:
            queue(connection, 6)
        with engine.connect() as connection:
            connection.scalar(text("SELECT 1"))
            connection.commit()
            sent = Many(connection.dialect, SENT, ["row_id", "status"])
            counted = Many(connection.dialect, QUEUED, ["row_id", "n"])
            log.log.clear()
            matched = write_in_one_trip(connection, [
                (sent, [{"row_id": n, "status": "sent"} for n in (1, 2, 3, 99)]),
                (counted, [{"row_id": n, "n": 7} for n in (4, 5)]),
            ])  # fmt: skip
            one_trip = log.sent_after_an_answer()
            log.log.clear()
            with connection.begin():  # the usual transaction, for comparison
                sent.execute(connection, [{"row_id": 6, "status": "sent"}])
            usual = log.sent_after_an_answer()
            rows = {
                row.id: (row.status, row.attempts) for row in connection.execute(select(outbox))
            }
    finally:
        engine.dispose()
    assert matched == 5  # row 99 does not exist
    assert one_trip == 0
    assert usual >= 2  # the UPDATE waited for BEGIN's answer, COMMIT for the UPDATE's
    assert rows == {1: ("sent", 0), 2: ("sent", 0), 3: ("sent", 0), 4: ("sending", 7),
                    5: ("sending", 7), 6: ("sent", 0)}  # fmt: skip


def test_a_failed_statement_writes_nothing_raises_as_sqlalchemy_does_and_spoils_no_connection(
    schema_url: str,
) -> None:
    engine = create_database_engine(schema_url)
    duplicate = update(outbox).where(outbox.c.id == bindparam("row_id")).values(id=bindparam("to"))
    try:
        with engine.begin() as connection:
            queue(connection, 3)
        with engine.connect() as connection:
            sent = Many(connection.dialect, SENT, ["row_id", "status"])
            clash = Many(connection.dialect, duplicate, ["row_id", "to"])
            with pytest.raises(IntegrityError):
                write_in_one_trip(connection, [
                    (sent, [{"row_id": 1, "status": "sent"}]),
                    (clash, [{"row_id": 2, "to": 3}]),  # id 3 is taken
                ])  # fmt: skip
            assert connection.invalidated
        with engine.connect() as connection:  # the pool hands out a working connection
            rows = dict(connection.execute(select(outbox.c.id, outbox.c.status)).all())
            connection.commit()
            assert write_in_one_trip(connection, [(sent, [{"row_id": 3, "status": "sent"}])]) == 1
    finally:
        engine.dispose()
    assert rows == {1: "sending", 2: "sending", 3: "sending"}  # the first UPDATE undone too


def test_a_server_that_cut_the_connection_is_an_operational_error(schema_url: str) -> None:
    """The delivery result writer tries again after an OperationalError (the database is
    restarting): the one-trip path must raise it as the usual one does."""
    engine = create_database_engine(schema_url)
    try:
        with engine.begin() as connection:
            queue(connection, 1)
        with engine.connect() as connection:
            backend = connection.scalar(text("SELECT pg_backend_pid()"))
            connection.commit()
            with engine.connect() as other:
                other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            sent = Many(connection.dialect, SENT, ["row_id", "status"])
            with pytest.raises(OperationalError):
                write_in_one_trip(connection, [(sent, [{"row_id": 1, "status": "sent"}])])
    finally:
        engine.dispose()
