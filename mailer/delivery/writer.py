"""Writing delivery results: one transaction for whatever results are waiting (a group commit),
in a thread so the event loop keeps sending, with up to COMMITS_IN_FLIGHT such commits at once
on PostgreSQL. A hard bounce is suppressed, with its ledger entry, in the same transaction that
marks the message failed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from mailer.consent.person import withdraw
from mailer.delivery.claims import OutboxMessage, Result, finish, finish_in_one_trip
from mailer.logs import logger
from mailer.metrics import count_result
from mailer.returns.refusals import record_refusals
from mailer.webhooks_out import WebhookEvent, enqueue
from mailer.webhooks_out.events import subscribers
from mailer.workspace import Workspace

if TYPE_CHECKING:
    from mailer.delivery.worker import DeliveryReport

# Seconds between tries while the database is away (a restart, a failover): about a minute in
# all, then the run stops and its rows come back after their lease.
OUTAGE_WAITS = (0.5, 1, 2, 4, 8, 15, 15, 15)
# A commit costs the PostgreSQL server about 300 µs of CPU besides its rows (results written in
# commits of 1, 5, 10: 332, 135, 65 µs a message; bench/scale_bench.py's result_writes), so the
# writer waits up to this long (seconds) for half the sessions' results before committing fewer.
# Each session waits for its commit anyway; this adds at most that much to its wait.
GROUP_LINGER = 0.003
# A commit waits for the server's WAL flush (fdatasync: 0.5 ms on a quiet disk, 6 ms and more
# on a busy one), so with one commit in flight the sessions queued behind it; PostgreSQL flushes
# commits that wait together at once, so two in flight write about twice as many results in that
# time. SQLite has one writer at a time: one there.
COMMITS_IN_FLIGHT = 2


class ResultWriter:
    def __init__(self, workspace: Workspace, owner: str, clock: Callable[[], datetime],
                 held: set[int], report: DeliveryReport) -> None:  # fmt: skip
        self.workspace = workspace
        self.owner = owner
        self.clock = clock
        self.held = held  # the run's claimed rows without a result yet
        self.report = report
        self.campaigns: dict[int, str] = {}  # the claimed rows' campaigns, for /metrics
        self.waiting: list[tuple[Result, asyncio.Future[None] | None]] = []
        self.wakeup = asyncio.Event()
        self.closing = False
        # Connections held from commit to commit (while they work): a checkout from the pool
        # would ping the server first, a round trip for every group commit.
        self.connections: list[Connection] = []  # idle, for the next commit
        self.in_flight: set[asyncio.Task[None]] = set()
        self.postgres = workspace.engine.dialect.name == "postgresql"
        self.lanes = COMMITS_IN_FLIGHT if self.postgres else 1
        # Fewer results waiting than this: linger for more (pools under 4 sessions never do).
        self.group = workspace.settings.smtp.pool_size // 2
        self.task = asyncio.create_task(self._run())

    def claimed(self, batch: list[OutboxMessage]) -> None:
        """Rows just claimed, whose results will come."""
        self.campaigns.update((message.id, message.campaign) for message in batch)

    def add(self, *results: Result) -> None:
        """Queue results to be written; nobody waits for them."""
        for result in results:
            self._enqueue(result, None)

    async def write(self, result: Result) -> None:
        """Queue a result and wait until it is committed."""
        done = asyncio.get_running_loop().create_future()
        self._enqueue(result, done)
        await done

    def _enqueue(self, result: Result, done: asyncio.Future[None] | None) -> None:
        self.held.discard(result.outbox_id)
        self.report.count(result)
        campaign = self.campaigns.pop(result.outbox_id, None)
        count_result(self.workspace.settings, campaign, result.ending, bool(result.bounced_address))
        self.waiting.append((result, done))
        self.wakeup.set()

    async def close(self) -> None:
        self.closing = True
        self.wakeup.set()
        try:
            await self.task
        finally:
            await asyncio.to_thread(self._let_go)

    def _let_go(self) -> None:
        """Give the held connections back."""
        while self.connections:
            self.connections.pop().close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            if len(self.in_flight) >= self.lanes:
                continue  # the end of a commit wakes this loop up again
            deadline = loop.time() + GROUP_LINGER
            while (not self.closing and len(self.waiting) < self.group
                   and (left := deadline - loop.time()) > 0):  # fmt: skip
                try:
                    await asyncio.wait_for(self.wakeup.wait(), left)
                except TimeoutError:
                    break
                self.wakeup.clear()
            batch, self.waiting = self.waiting, []
            if batch:
                commit = asyncio.create_task(self._commit(batch))
                self.in_flight.add(commit)
                commit.add_done_callback(self._committed)
            if self.closing and not self.waiting and not self.in_flight:
                return

    def _committed(self, commit: asyncio.Task[None]) -> None:
        self.in_flight.discard(commit)
        self.wakeup.set()

    async def _commit(self, batch: list[tuple[Result, asyncio.Future[None] | None]]) -> None:
        try:
            await self._write_through_outage([result for result, _ in batch])
        except Exception as error:  # the database is gone: the senders must stop
            logger.exception("cannot write delivery results")
            for _, done in batch:
                if done is not None and not done.done():
                    done.set_exception(error)
            return
        for _, done in batch:
            if done is not None and not done.done():
                done.set_result(None)

    async def _write_through_outage(self, results: list[Result]) -> None:
        """Write, trying again while the database is away (restarting, failing over): a
        message the relay took is written down `sent`, not sent again after the lease."""
        for wait in (*OUTAGE_WAITS, None):
            try:
                await asyncio.to_thread(self._write, results)
                return
            except OperationalError as error:
                if wait is None:
                    raise
                why = " ".join(str(error.orig).split())
                logger.warning(f"cannot write delivery results ({why}); trying again in {wait:g} s")
                await asyncio.sleep(wait)

    def _write(self, results: list[Result]) -> None:
        now = self.clock()
        try:
            connection = self.connections.pop()  # atomic: two commits may be taking one
        except IndexError:
            connection = self.workspace.engine.connect()
        try:
            if self.postgres and self._only_rows(results):
                self._warn_if_lost(finish_in_one_trip(connection, self.owner, results, now),
                                   results)  # fmt: skip
            else:
                with connection.begin():
                    self._write_in(connection, results, now)
        except BaseException:
            connection.close()  # the next try takes a connection from the pool, pinged
            raise
        self.connections.append(connection)

    def _only_rows(self, results: list[Result]) -> bool:
        """Whether writing `results` is only their outbox rows: no hard bounce to suppress, no
        webhook to queue. Then PostgreSQL takes the commit in one round trip (store/one_trip.py:
        two fewer waits for each relay session behind it); anything that reads first takes the
        usual transaction."""
        return (not any(result.bounced_address for result in results)
                and not subscribers(self.workspace.settings, "sent"))  # fmt: skip

    @staticmethod
    def _warn_if_lost(kept: int, results: list[Result]) -> None:
        if kept < len(results):
            logger.warning("lease lost: another worker took these rows over",
                           extra={"rows": len(results) - kept})  # fmt: skip

    def _write_in(self, connection: Connection, results: list[Result], now: datetime) -> None:
        workspace = self.workspace
        self._warn_if_lost(finish(connection, self.owner, results, now), results)
        refused = []
        for result in results:
            if result.bounced_address:
                appended = suppress_hard_bounce(connection, workspace, result.bounced_address,
                                                now, detail=result.reply)  # fmt: skip
                done = ("suppressed (hard bounce at the relay)" if appended
                        else "none (already suppressed)")  # fmt: skip
                refused.append((result.outbox_id, result.bounced_address, result.reply, done))
        record_refusals(connection, workspace.settings, workspace.key, refused, now)
        sent = (result for result in results if result.ending == "sent")
        enqueue(connection, workspace.settings, "sent",
                (WebhookEvent(now, outbox_id=result.outbox_id) for result in sent))  # fmt: skip
        enqueue(connection, workspace.settings, "bounced", (
            WebhookEvent(now, outbox_id=r.outbox_id, data={"classification": "hard",
                         "reply": r.reply, "at": "relay"})
            for r in results if r.bounced_address))  # fmt: skip


def suppress_hard_bounce(connection: Connection, workspace: Workspace, address: str,
                         now: datetime, detail: str | None,
                         evidence: str | None = None) -> list[int]:  # fmt: skip
    """The one rule for a hard bounce, at the relay (5.1.1) or in a DSN that comes back later
    (returns/effects.py): suppress at once, withdrawn from every list, a ledger entry with
    source bounce. Returns the entries appended (none when already suppressed)."""
    return withdraw(connection, workspace.key, address, workspace.double_opt_in, now,
                    source="bounce", reason="hard_bounce", detail=detail,
                    evidence=evidence)  # fmt: skip
