"""Reads beside a writing transaction: a second connection that reads what the transaction
itself would read, so that the server answers the reads on one backend while it takes the
transaction's writes on another (the tick reads each batch's facts while the batch before is
copied). That holds only where the transaction has written nothing the reads could see: its
uncommitted rows are its own."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

from mailer.logs import logger

# The transaction sees what another connection sees: each statement's snapshot is taken when
# it starts (READ COMMITTED), and it has run no write statement (whose lock it keeps until it
# ends: INSERT, UPDATE, DELETE and COPY take ROW EXCLUSIVE, DDL stronger) on a table other
# than the `unread` ones, their indexes or a sequence. That covers the temporary tables that
# hide tables of the same name (`mailer plan` writes into such copies): mailer's are created
# in the transaction and dropped at its end. (Not pg_class: a scan of it, bloated by temporary
# tables come and gone, took 28 ms on the test server.)
_ALIKE = text("""
WITH unread AS (SELECT to_regclass(name) AS oid FROM unnest(CAST(:unread AS text[])) AS name)
SELECT current_setting('transaction_isolation') = 'read committed'
   AND NOT EXISTS (SELECT FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
                   WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation'
                     AND l.mode NOT IN ('AccessShareLock', 'RowShareLock')
                     AND c.relkind <> 'S' AND c.oid NOT IN (SELECT oid FROM unread
                                                            WHERE oid IS NOT NULL)
                     AND NOT EXISTS (SELECT FROM pg_index AS i WHERE i.indexrelid = c.oid
                                     AND i.indrelid IN (SELECT oid FROM unread)))
""")


def sees_alike(connection: Connection, unread: Collection[str]) -> bool:
    """Whether another connection of the same database reads what `connection`'s transaction
    reads, in every table but the `unread` ones (which the reads do not touch). PostgreSQL
    only: on SQLite no server reads beside the writes (this process reads the file itself)."""
    if connection.dialect.name != "postgresql":
        return False
    return bool(connection.execute(_ALIKE, {"unread": list(unread)}).scalar())


@contextmanager
def reader_beside(connection: Connection, unread: Collection[str]) -> Iterator[Connection]:
    """A connection of the same pool that reads what `connection`'s transaction reads (see
    sees_alike), in a transaction of its own that is rolled back; or `connection` itself when
    none does, or when the pool's connections are all taken (pool_size: a tick must not wait
    for one that delivery holds, nor open one beyond the size)."""
    pool = connection.engine.pool
    size, taken = getattr(pool, "size", None), getattr(pool, "checkedout", None)
    if size is None or taken is None or taken() >= size() or not sees_alike(connection, unread):
        yield connection
        return
    try:
        reader = connection.engine.connect()
    except Exception:  # the reads go on where they would have gone without
        logger.info("no connection to read beside the tick's", exc_info=True)
        yield connection
        return
    with reader:
        yield reader
