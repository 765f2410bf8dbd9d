"""Which relays are down, shared by every process through the database (table relays_down).

A process reads the table into memory at each batch claim (never per message) and writes it
only when a relay goes down, comes back, or is probed. So a second `mailer run` skips a relay
the first found down without trying it. A down relay's probe is taken by one process and one
session at a time: the taker moves probe_at forward in the same UPDATE ... WHERE probe_at <= now
that takes it (to when the next probe would be after a failure), so the others see it taken and
go on using the fallback; a taker that dies leaves the relay probed again at that later time.

When a relay answers again after every relay was down, the messages deferred because no relay
took them (reason "no relay takes mail ...") are made due at once in the transaction that
forgets its down state (come_back): the next claim sends them, instead of each waiting out its
own backoff. A message deferred for its recipient's 4xx keeps its backoff.

SQLite runs the same code. A database that cannot be written is logged and the relay's state is
kept in this process's memory meanwhile: delivery does not stop for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from mailer.config import Relay, Settings
from mailer.delivery import relay_watch
from mailer.delivery.relays import (
    NO_RELAY,
    Down,
    FailoverSession,
    down_after,
    takes_relay_down,
)
from mailer.delivery.replies import SmtpReply
from mailer.logs import logger
from mailer.store.engine import reading
from mailer.store.tables import outbox, relays_down

Key = tuple[str, int]  # a relay's host and port
T = TypeVar("T")


def key_of(relay: Relay) -> Key:
    return (relay.host, relay.port)


def _where(key: Key) -> Any:
    return and_(relays_down.c.host == key[0], relays_down.c.port == key[1])


def _down(row: Any) -> Down:
    return Down(row.since, row.probe_at, row.failures, row.reason)


def read_downs(connection: Connection) -> dict[Key, Down]:
    """Every relay found down, by host and port."""
    return {(row.host, row.port): _down(row) for row in connection.execute(select(relays_down))}


def downs_by_name(connection: Connection, settings: Settings) -> dict[str, Down]:
    """The relays of settings found down (by any process), by name."""
    found = read_downs(connection)
    return {name: found[key_of(relay)] for name, relay in settings.relays()
            if key_of(relay) in found}  # fmt: skip


def mark_down(connection: Connection, key: Key, down: Down) -> tuple[Down, bool]:
    """Record `down` unless another process did first: the state as recorded, and whether
    this call recorded it."""
    dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(relays_down).values(
        host=key[0], port=key[1], since=down.since, probe_at=down.probe_at,
        failures=down.failures, reason=down.reason,
    ).on_conflict_do_nothing()  # fmt: skip
    inserted = bool(connection.execute(statement).rowcount)
    return _down(connection.execute(select(relays_down).where(_where(key))).one()), inserted


def take_probe(connection: Connection, key: Key, taken: Down, now: datetime) -> bool:
    """Take the relay's probe due at `now`, moving probe_at (and failures) to `taken`'s:
    False when another process took it first (or it is up again)."""
    statement = (
        update(relays_down)
        .where(_where(key), relays_down.c.probe_at <= now)
        .values(probe_at=taken.probe_at, failures=taken.failures)
    )
    return bool(connection.execute(statement).rowcount)


def probe_failed(connection: Connection, key: Key, reason: str) -> None:
    connection.execute(update(relays_down).where(_where(key)).values(reason=reason))


def mark_up(connection: Connection, key: Key) -> bool:
    """Forget the relay's down state; whether there was one to forget."""
    return bool(connection.execute(delete(relays_down).where(_where(key))).rowcount)


def come_back(connection: Connection, key: Key, every: Collection[Key],
              now: datetime) -> tuple[bool, int]:  # fmt: skip
    """The relay `key` answered: forget its down state and, when every relay (`every`) had
    been down, make the messages deferred because no relay took them due at `now`, instead
    of after each one's backoff. Whether it was down, and how many messages are due now.
    Messages deferred for their recipient's own 4xx (greylisting) keep their backoff."""
    were_down = set(read_downs(connection))
    if not mark_up(connection, key):
        return False, 0
    if not set(every) <= were_down:
        return True, 0
    return True, release_no_relay(connection, now)


def release_no_relay(connection: Connection, now: datetime) -> int:
    """Make the messages deferred because no relay took mail due at `now`; how many."""
    statement = (
        update(outbox)
        .where(outbox.c.status == "deferred", outbox.c.send_after > now,
               outbox.c.reason.startswith(NO_RELAY, autoescape=True))
        .values(send_after=now)
    )  # fmt: skip
    return connection.execute(statement).rowcount or 0


class RelayBoard:
    """The relays down, as this process last read them, and the writes that change them."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.relays = dict(settings.relays())
        self._downs: dict[Key, Down] = {}
        self._lock = threading.Lock()  # sessions write in the event loop, claims read in a thread

    def refresh(self, connection: Connection | None = None) -> None:
        """Read what every process found (at each batch claim; on `connection` if given)."""
        try:
            if connection is not None:
                found = read_downs(connection)
            else:
                with reading(self.engine) as reader:
                    found = read_downs(reader)
        except SQLAlchemyError as error:
            logger.warning(f"could not read which relays are down: {error}"[:300])
            return
        with self._lock:
            self._downs = found

    def downs(self) -> dict[str, Down]:
        """The relays down by name, as last read or written by this process."""
        with self._lock:
            return {name: self._downs[key_of(relay)] for name, relay in self.relays.items()
                    if key_of(relay) in self._downs}  # fmt: skip

    async def take_probe(self, name: str, now: datetime) -> bool:
        """Whether this session probes the relay `name`, due a probe at `now`: False when
        another session or process took the probe first."""
        key = key_of(self.relays[name])
        with self._lock:
            was = self._downs.get(key)
            if was is not None and was.probe_at > now:
                return False  # taken by another session of this process
            if was is not None:  # the next probe as if this one failed, until it succeeds
                self._downs[key] = replace(was, probe_at=down_after(was, _PROBE, now).probe_at,
                                           failures=was.failures + 1)  # fmt: skip
        if was is None:
            return True  # up again meanwhile
        taken = self._downs.get(key, was)
        if await self._write(take_probe, key, taken, now, fallback=True):
            return True
        stored: Down | None = await self._write(_read_one, key, fallback=taken)
        with self._lock:
            if stored is None:
                self._downs.pop(key, None)
            else:
                self._downs[key] = stored
        return stored is None  # gone: another process found it up, so it is

    async def note(self, name: str, reply: SmtpReply, now: datetime, probed: bool) -> bool:
        """Take note of one reply of the relay `name` (`probed`: this session took its probe);
        True when it says the relay is down."""
        relay = self.relays[name]
        relay_watch.watch(relay, reply)
        key, down = key_of(relay), takes_relay_down(reply)
        with self._lock:
            was = self._downs.get(key)
            if not down:
                self._downs.pop(key, None)
            elif was is None:  # known at once to this process's other sessions
                self._downs[key] = down_after(None, reply, now)
            elif probed:
                self._downs[key] = replace(was, reason=down_after(was, reply, now).reason)
            news = self._downs.get(key)
        if not down and was is not None:
            every = [key_of(relay) for relay in self.relays.values()]
            back, due = await self._write(come_back, key, every, now, fallback=(True, 0))
            if back:
                since = f"relay {name} is up again (down since {was.since:%Y-%m-%d %H:%M:%S})"
                logger.info(since + (f"; {due} messages deferred while no relay took mail are "
                                     "due now" if due else ""))  # fmt: skip
        elif down and was is None and news is not None:
            stored, mine = await self._write(mark_down, key, news, fallback=(news, True))
            with self._lock:
                self._downs[key] = stored
            if mine:
                _log_down(name, stored, now)
        elif down and probed and news is not None:
            await self._write(probe_failed, key, news.reason, fallback=None)
            _log_down(name, news, now)
        return down

    async def _write(self, change: Callable[..., T], *args: Any, fallback: T) -> T:
        """`change(connection, *args)` in a transaction of its own, in a thread; `fallback`
        when the database cannot be written (this process goes on with what it knows)."""

        def run() -> T:
            with self.engine.begin() as connection:
                return change(connection, *args)

        try:
            return await asyncio.to_thread(run)
        except SQLAlchemyError as error:
            logger.warning(f"could not record a relay's state in the database: {error}"[:300])
            return fallback


async def send_one(engine: Engine, settings: Settings, envelope_from: str, recipient: str,
                   wire: bytes, smtputf8: bool,
                   now: datetime) -> tuple[str, SmtpReply]:  # fmt: skip
    """One message outside the outbox (the confirmation email, a forwarded reply) through the
    relays in failover order, as campaign mail goes: the relay that answered, and its answer."""
    board = RelayBoard(engine, settings)
    await asyncio.to_thread(board.refresh)
    passwords = {name: settings.smtp_password(name) for name, _relay in settings.relays()}
    session = FailoverSession(settings, passwords, board)
    try:
        return await session.send(envelope_from, recipient, wire, smtputf8, now)
    finally:
        await session.close()


_PROBE = SmtpReply(None, "probe", "connect")  # down_after's wait does not depend on the reply


def _read_one(connection: Connection, key: Key) -> Down | None:
    row = connection.execute(select(relays_down).where(_where(key))).one_or_none()
    return None if row is None else _down(row)


def _log_down(name: str, down: Down, now: datetime) -> None:
    wait = int((down.probe_at - now).total_seconds())
    logger.warning(f"relay {name} is down: {down.reason}; probed again in {wait} s")


RELAY_UP_HELP = "1 while the relay takes mail, 0 while it is down and skipped (every process)"


class RelayGauges(Collector):
    """mailer_relay_up{relay} for every relay of settings, read from the database when
    scraped."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        with reading(self.engine) as connection:
            found = downs_by_name(connection, self.settings)
        up = GaugeMetricFamily("mailer_relay_up", RELAY_UP_HELP, labels=["relay"])
        for name, _relay in self.settings.relays():
            up.add_metric([name], int(name not in found))
        yield up
