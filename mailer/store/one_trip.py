"""A short write transaction sent to PostgreSQL in one round trip: BEGIN, the statements and
COMMIT go out in one write and their answers come back in one read (psycopg's pipeline mode).

A transaction through SQLAlchemy costs three round trips: psycopg sends BEGIN and waits for its
answer (even in pipeline mode), then the statements, then COMMIT. On a busy machine each round
trip waits for the server's process and then ours to get a core. The delivery result writer
commits every few messages and each relay session waits for its commit before it sends again,
so there round trips are messages per second (bench/scale_bench.py, README "Budgets").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from mailer.store.bulk import Many


def write_in_one_trip(connection: Connection,
                      work: Sequence[tuple[Many, Sequence[Mapping[str, Any]]]]) -> int:  # fmt: skip
    """Execute each statement once per row of its rows, all in one transaction sent in one
    round trip (PostgreSQL only); the rows they matched, in all.

    On an error nothing is written and the connection is invalidated (its session may be left
    inside the failed transaction); the error is raised as SQLAlchemy raises a driver's error
    (an OperationalError when the server is away), so callers handle both paths alike."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection), "write_in_one_trip needs psycopg"
    assert not connection.in_transaction(), "write_in_one_trip makes its own transaction"
    cursors = []
    try:
        if driver.info.transaction_status != TransactionStatus.IDLE:
            driver.rollback()  # the pool's ping on checkout opened one (a new connection)
        driver.autocommit = True  # BEGIN is ours to send, without waiting for its answer
        with driver.pipeline():
            driver.execute("BEGIN")
            for many, rows in work:
                cursor = driver.cursor()
                # Without returning=True: with it, psycopg waits for each statement's answers.
                cursor.executemany(many.sql, many.records(rows))
                cursors.append(cursor)
            driver.execute("COMMIT")
        driver.autocommit = False
        return sum(max(cursor.rowcount, 0) for cursor in cursors)  # known once answered
    except psycopg.Error as error:
        connection.invalidate()
        raise DBAPIError.instance(None, None, error, psycopg.Error) from error
