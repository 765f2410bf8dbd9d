"""The delivery pipeline: claim -> render (worker processes) -> consent gate 2 -> throttle ->
SMTP session -> result, written before that session sends its next message.

    claim batch ──► render chunks ──► gate ──► queue ──► N relay sessions ──► result writer
      (thread)       (processes)    (thread)              (event loop)        (thread, group commit)

The loop itself only does I/O. Each relay session waits for its last result to be committed
before it sends the next message's content (only its envelope may go ahead, announced with the
message before: relay.py), so a crash can repeat at most one message per session (a 250
received and not yet written down): the duplicate window, kept to one message a connection.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from mailer.contacts.model import Contact, load_contacts
from mailer.delivery import gate, still_wanted
from mailer.delivery.claims import OutboxMessage, Result, claim, take_back
from mailer.delivery.pauses import pause, paused_campaigns
from mailer.delivery.relay import Envelope, refuse_cleartext_password
from mailer.delivery.relay_board import RelayBoard
from mailer.delivery.relays import FailoverSession, deferral_reason
from mailer.delivery.rendering import CHUNK, Outgoing, Rendered, RenderJob, RenderPool
from mailer.delivery.replies import RetryPolicy, SmtpReply, judge, next_attempt
from mailer.delivery.throttle import Throttle
from mailer.delivery.writer import ResultWriter
from mailer.logs import logger
from mailer.store.engine import reading
from mailer.workspace import Workspace

T = TypeVar("T")
DIED = "the render process died (killed, out of memory, or crashed)"
RESTARTED = f"{DIED}; a new one renders again, one at a time, the messages it had in hand"
# Messages through consent gate 2 in one call at most: the chunks two render processes have
# ahead. They then wait for a relay session, so this bounds how long before its SMTP a
# message's consent was read: ~0.2 s at 1,700 messages a second (one chunk alone, ~25 ms).
# Against one call a chunk: 5-11% more messages a second (bench/scale_bench.py; at most 160
# a call, 0-4%).
GATED_AT_MOST = 8 * CHUNK
# Seconds between a run's reads of which campaigns are paused (`mailer campaign pause`, from
# any process): a message of a campaign paused since it was claimed goes back to the outbox
# instead of out. Only messages already handed to a relay session are sent after a pause.
PAUSES_READ_EVERY = 1.0


def run_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on uvloop where it is installed (a third less CPU per message than asyncio's
    own loop, measured by bench/send_bench.py), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


@dataclass
class DeliveryReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    skipped: int = 0
    bounced: int = 0  # of the failed: hard bounces, now suppressed
    paused: list[str] = field(default_factory=list)  # campaigns paused for relay refusals

    def counts(self) -> dict[str, int]:
        return {"sent": self.sent, "deferred": self.deferred, "failed": self.failed,
                "skipped": self.skipped}  # fmt: skip

    def count(self, result: Result) -> None:
        if result.ending in ("sent", "deferred", "failed", "skipped"):
            setattr(self, result.ending, getattr(self, result.ending) + 1)


@dataclass(frozen=True)
class Chunk:
    """Messages of one claimed batch on their way through a render process."""

    jobs: list[RenderJob]
    now: datetime  # the time they are rendered at
    pool: RenderPool  # the pool rendering them
    future: asyncio.Future[list[Rendered]]
    claimed: dict[int, OutboxMessage]  # the batch's rows, by outbox id
    contacts: dict[int, Contact]


@dataclass(frozen=True)
class Ready:
    """A rendered message that passed consent gate 2, waiting for a relay session."""

    claimed: OutboxMessage
    contact: Contact
    message: Outgoing
    consent_entry_id: int | None


class Deliverer:
    """Delivers what the outbox holds, for one worker; made once, used for many runs."""

    def __init__(self, workspace: Workspace, owner: str | None = None,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        refuse_cleartext_password(workspace.settings)  # before `mailer run` starts, not later
        # The render processes load the secret and DKIM keys again: one missing stops here, in
        # one line, not as a broken process pool at every delivery.
        workspace.renderer  # noqa: B018
        self.workspace = workspace
        self.settings = workspace.settings
        delivery = self.settings.delivery
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.throttle = Throttle(workspace.engine, delivery.rate, delivery.domain_rates)
        self.policy = RetryPolicy(delivery.retry_after, delivery.retry_at_most,
                                  delivery.give_up_after)  # fmt: skip
        self.rng = rng or random.Random()
        self.refusals: dict[str, int] = {}  # relay refusals in a row, per campaign
        self.relays = RelayBoard(workspace.engine, self.settings)  # read at each claim
        self.pool: RenderPool | None = None
        self.failure: Exception | None = None  # results could not be written: the run stops
        self.paused: dict[str, str] = {}  # campaign -> why, as last read (PAUSES_READ_EVERY)
        # Chunks rendered ahead of the relay sessions: enough to keep every process busy.
        self.lookahead = 4 * max(delivery.render_processes, 1)

    def deliver(self, now: datetime | None = None) -> DeliveryReport:
        """Send everything due (at `now`, else the clock's time, read at every claim)."""
        return run_loop(self.drain(now))

    async def drain(self, now: datetime | None = None,
                    stop: asyncio.Event | None = None) -> DeliveryReport:  # fmt: skip
        """Claim and send batch after batch until nothing is due or `stop` is set; then finish
        the messages in flight and give back the rest of the claimed rows."""
        clock: Callable[[], datetime] = (lambda: now) if now else self.workspace.clock.now
        report = DeliveryReport()
        self.pool = self.pool or RenderPool(self.settings)
        held: set[int] = set()  # claimed by this run and not finished
        writer = ResultWriter(self.workspace, self.owner, clock, held, report)
        passwords = {name: self.settings.smtp_password(name)
                     for name, _relay in self.settings.relays()}  # fmt: skip
        ready: asyncio.Queue[Ready | None] = asyncio.Queue(self.settings.smtp.pool_size * 4)
        sessions = [FailoverSession(self.settings, passwords, self.relays)
                    for _ in range(self.settings.smtp.pool_size)]  # fmt: skip
        senders = [asyncio.create_task(self._send_all(s, ready, writer, clock, report))
                   for s in sessions]  # fmt: skip
        self.failure = None
        await asyncio.to_thread(self._take_back, clock())
        # Claims skip what is paused when they claim; the watcher reads what is paused after.
        self.paused = {}
        watching = asyncio.create_task(self._watch_pauses())
        pending: deque[Chunk] = deque()  # being rendered, in the order they were claimed
        more = True

        def stopping() -> bool:
            return stop is not None and stop.is_set()

        try:
            while self.failure is None and not stopping():
                # Claim ahead, so the render processes never wait for the relay sessions.
                while more and len(pending) < self.lookahead:
                    batch = await asyncio.to_thread(self._claim, clock())
                    more = bool(batch)
                    held.update(message.id for message in batch)
                    writer.claimed(batch)
                    pending.extend(await self._submit(batch, writer, clock))
                if not pending:
                    break
                chunk = pending.popleft()
                rendered = await self._rendered(chunk, writer, clock)
                while self._gated_with(chunk, rendered, pending):
                    rendered += await self._rendered(pending.popleft(), writer, clock)
                for item in await asyncio.to_thread(self._gate, rendered, chunk, writer):
                    if stopping():
                        break
                    await ready.put(item)
        finally:
            watching.cancel()
            for chunk in pending:
                chunk.future.cancel()
            while stopping() and not ready.empty():  # not in flight yet: given back below
                ready.get_nowait()
            for _ in senders:
                await ready.put(None)
            await asyncio.gather(*senders, return_exceptions=True)
            await asyncio.gather(*(session.close() for session in sessions))
            writer.add(*(Result(outbox_id, "released", "delivery stopped") for outbox_id in held))
            await writer.close()
        if self.failure is not None:
            raise self.failure
        return report

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _read_pauses(self) -> dict[str, str]:
        with reading(self.workspace.engine) as connection:
            return paused_campaigns(connection)

    async def _watch_pauses(self) -> None:
        while True:
            with suppress(SQLAlchemyError):  # the database away: the last view holds meanwhile
                self.paused = await asyncio.to_thread(self._read_pauses)
            await asyncio.sleep(PAUSES_READ_EVERY)

    def _take_back(self, now: datetime) -> None:
        with self.workspace.engine.begin() as connection:
            if taken := take_back(connection, self.owner, now):
                logger.warning(f"{taken} messages of this worker's last run have no result "
                               "written (the database went away): sending them again; each "
                               "may have reached the relay once already")  # fmt: skip

    def _claim(self, now: datetime) -> list[OutboxMessage]:
        delivery = self.settings.delivery
        with self.workspace.engine.begin() as connection:
            batch = claim(connection, self.owner, now, delivery.lease, delivery.batch_size)
            self.relays.refresh(connection)  # what every process found down, once a batch
        if taken_over := sum(message.reclaimed for message in batch):
            logger.warning(f"{taken_over} messages taken over from a worker whose lease ended: "
                           "each may have reached the relay once already (if that worker "
                           "died between the relay's 250 and its commit)")  # fmt: skip
        return batch

    async def _submit(self, batch: list[OutboxMessage], writer: ResultWriter,
                      clock: Callable[[], datetime]) -> list[Chunk]:  # fmt: skip
        """Hand a claimed batch to the render processes, in chunks."""
        assert self.pool is not None
        contacts = await asyncio.to_thread(self._contacts, batch)
        writer.add(*(Result(m.id, "skipped", "the contact was deleted")
                     for m in batch if m.contact_id not in contacts))  # fmt: skip
        jobs = [RenderJob(m.id, m.message_key, m.campaign, m.step, contacts[m.contact_id],
                          m.variant) for m in batch if m.contact_id in contacts]  # fmt: skip
        by_id = {message.id: message for message in batch}
        now = clock()
        chunks = []
        for part in (jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)):
            pool, future = self._render(part, now)
            chunks.append(Chunk(part, now, pool, asyncio.wrap_future(future), by_id, contacts))
        return chunks

    def _render(self, jobs: list[RenderJob],
                now: datetime) -> tuple[RenderPool, Future[list[Rendered]]]:  # fmt: skip
        """Hand `jobs` to the render pool; the pool, for `_rendered` to know if it died."""
        assert self.pool is not None
        try:
            return self.pool, self.pool.submit(jobs, now)
        except BrokenProcessPool:  # a process died since the last hand-over
            pool = self._replace_pool(self.pool, RESTARTED)
            return pool, pool.submit(jobs, now)

    async def _rendered(self, chunk: Chunk, writer: ResultWriter,
                        clock: Callable[[], datetime]) -> list[Rendered]:  # fmt: skip
        """The chunk rendered. If a render process died, every message the pool had in hand
        is rendered again alone, one after another, in a new pool: a message that kills its
        process takes no other with it, and waits for its next attempt (or fails)."""
        try:
            return await chunk.future
        except BrokenProcessPool:
            self._replace_pool(chunk.pool, RESTARTED)
        rendered: list[Rendered] = []
        for job in chunk.jobs:
            pool, future = self._render([job], chunk.now)
            try:
                alone: list[Rendered] = await asyncio.wrap_future(future)
            except BrokenProcessPool:
                claimed = chunk.claimed[job.outbox_id]
                result = self._retry(claimed, f"render: {DIED} rendering this message alone",
                                     clock())  # fmt: skip
                self._replace_pool(pool, f"{DIED} rendering outbox message {claimed.id} "
                                         f"alone: {result.ending}")  # fmt: skip
                writer.add(result)
            else:
                rendered += alone
        return rendered

    @staticmethod
    def _gated_with(chunk: Chunk, rendered: list[Rendered], pending: deque[Chunk]) -> bool:
        """Whether the next chunk passes the gate with `chunk` (rendered so far: `rendered`):
        one of the same claimed batch, rendered already, while GATED_AT_MOST allows. The
        gate's recheck and consent read cost ~2 ms of the delivering process a call, whatever
        its size."""
        following = pending[0] if pending else None
        return (following is not None and following.claimed is chunk.claimed
                and following.future.done()
                and len(rendered) + len(following.jobs) <= GATED_AT_MOST)  # fmt: skip

    def _replace_pool(self, broken: RenderPool, news: str) -> RenderPool:
        """The deliverer's pool, made anew if it is still `broken` (a dead process breaks a
        process pool for good), with `news` logged once for each pool that died."""
        if self.pool is broken:
            logger.warning(news)
            broken.close()
            self.pool = RenderPool(self.settings)
        assert self.pool is not None
        return self.pool

    def _contacts(self, batch: list[OutboxMessage]) -> dict[int, Contact]:
        with reading(self.workspace.engine) as connection:
            return load_contacts(connection, [message.contact_id for message in batch])

    def _gate(self, rendered: list[Rendered], chunk: Chunk,
              writer: ResultWriter) -> list[Ready]:  # fmt: skip
        """Consent gate 2 for a rendered chunk: what may go now, the rest ends here."""
        with reading(self.workspace.engine) as connection:  # one connection for both reads
            # The recheck first: a message no longer wanted is no failure.
            wanted = self._still_wanted(rendered, chunk, writer, connection)
            return self._consented(wanted, chunk, writer, connection)

    def _consented(self, wanted: list[Rendered], chunk: Chunk, writer: ResultWriter,
                   connection: Connection) -> list[Ready]:  # fmt: skip
        """Render failures end here; the rest pass consent gate 2 or are skipped."""
        by_id, contacts = chunk.claimed, chunk.contacts
        for item in wanted:
            if item.error is not None:
                logger.warning("render failed", extra={"outbox_id": item.outbox_id,
                                                       "reason": item.error})  # fmt: skip
                writer.add(Result(item.outbox_id, "failed", f"render: {item.error}"))
        fine = [item for item in wanted if item.message is not None]
        lists_of = {item.outbox_id: self._list_of(by_id[item.outbox_id]) for item in fine}
        contact_of = {item.outbox_id: by_id[item.outbox_id].contact_id for item in fine}
        verdicts = gate.check(connection, lists_of, contact_of)
        passed = []
        for item in fine:
            reason, entry_id = verdicts[item.outbox_id]
            if reason is not None:
                writer.add(Result(item.outbox_id, "skipped", f"at sending: {reason}"))
                continue
            claimed = by_id[item.outbox_id]
            assert item.message is not None
            passed.append(Ready(claimed, contacts[claimed.contact_id], item.message, entry_id))
        return passed

    def _still_wanted(self, rendered: list[Rendered], chunk: Chunk, writer: ResultWriter,
                      connection: Connection) -> list[Rendered]:  # fmt: skip
        """The messages still wanted (goal, ended enrollment, condition, segment: asked before
        consent, in the engine's order); the others end here."""
        asked = [chunk.claimed[item.outbox_id] for item in rendered]
        found = still_wanted.recheck(connection, self.settings, asked, chunk.now)
        if found.converted or found.branched:
            with self.workspace.engine.begin() as connection:
                still_wanted.follow_up(connection, self.settings, found, chunk.now)
        skipped = [Result(i, "skipped", f"at sending: {why}") for i, why in found.skipped.items()]
        # Sending without the recheck could send what is no longer wanted: try again later.
        held = [self._retry(chunk.claimed[i], why, chunk.now) for i, why in found.failed.items()]
        writer.add(*skipped, *held)
        return [item for item in rendered if item.outbox_id not in found.answered]

    def _list_of(self, message: OutboxMessage) -> str:
        campaign = self.settings.campaigns.get(message.campaign)
        return campaign.list_name if campaign else ""

    async def _send_all(self, session: FailoverSession, ready: asyncio.Queue[Ready | None],
                        writer: ResultWriter, clock: Callable[[], datetime],
                        report: DeliveryReport) -> None:  # fmt: skip
        item = await ready.get()
        while item is not None:
            # The next message, if one waits (None: the end): its envelope goes with this one.
            waiting = not ready.empty()
            following = ready.get_nowait() if waiting else None
            if self.failure is None:  # else results cannot be written: send nothing more
                then = self._announceable(following, report)
                result = await self._send_one(session, item, clock, report, then)
                try:
                    await writer.write(result)  # committed before this session sends again
                except Exception as error:
                    self.failure = error
            item = following if waiting else await ready.get()

    def _announceable(self, following: Ready | None,
                      report: DeliveryReport) -> Envelope | None:  # fmt: skip
        """The envelope of the message a session sends next, to go out with this one; None
        where it may not go at once (a rate to take it from, its campaign paused)."""
        if following is None or self._held(following.claimed.campaign, report):
            return None
        message = following.message
        if self.throttle.budgets(message.recipient):
            return None
        return Envelope(message.envelope_from, message.recipient, message.smtputf8)

    def _held(self, campaign: str, report: DeliveryReport) -> bool:
        """Whether the campaign is paused: by this run (relay refusals), or as last read."""
        return campaign in report.paused or campaign in self.paused

    async def _send_one(self, session: FailoverSession, item: Ready,
                        clock: Callable[[], datetime], report: DeliveryReport,
                        then: Envelope | None = None) -> Result:  # fmt: skip
        claimed, message = item.claimed, item.message
        if claimed.campaign in report.paused:
            return Result(claimed.id, "released", "campaign paused: relay refusals")
        if claimed.campaign in self.paused:
            return Result(claimed.id, "released",
                          f"campaign paused: {self.paused[claimed.campaign]}")  # fmt: skip
        hold = await self.throttle.admit(message.recipient, clock)
        if hold is not None:  # over a rate for longer than a short wait: not an attempt
            return Result(claimed.id, "released", hold.reason, send_after=hold.until)
        relay, reply = await session.send(message.envelope_from, message.recipient, message.wire,
                                          message.smtputf8, clock(), then)  # fmt: skip
        return await self._judged(item, reply, clock(), report, relay)

    async def _judged(self, item: Ready, reply: SmtpReply, now: datetime,
                      report: DeliveryReport, relay: str) -> Result:  # fmt: skip
        claimed, message = item.claimed, item.message
        verdict = judge(reply)
        await self._count_refusal(claimed.campaign, verdict.relay_refusal, reply, report)
        answer = str(reply)
        if verdict.outcome == "sent":
            return Result(claimed.id, "sent", reply=answer, relay=relay,
                          message_id=message.message_id,
                          links=message.links, consent_entry_id=item.consent_entry_id)  # fmt: skip
        if verdict.outcome == "retry":
            return self._retry(claimed, deferral_reason(reply), now, answer, relay)
        if verdict.hard_bounce:
            report.bounced += 1
        bounced = item.contact.email if verdict.hard_bounce else None
        return Result(claimed.id, "failed", f"refused at {reply.stage}", reply=answer,
                      relay=relay, bounced_address=bounced)  # fmt: skip

    def _retry(self, claimed: OutboxMessage, reason: str, now: datetime,
               reply: str | None = None, relay: str | None = None) -> Result:  # fmt: skip
        """Deferred with backoff, or failed once the retry policy gives up."""
        again = next_attempt(self.policy, claimed.attempts, claimed.queued_at, now, self.rng)
        if again is not None:
            return Result(claimed.id, "deferred", reason, reply=reply, relay=relay,
                          send_after=again)  # fmt: skip
        reason = f"{reason}; gave up after {claimed.attempts} attempts"
        return Result(claimed.id, "failed", reason, reply=reply, relay=relay)

    async def _count_refusal(self, campaign: str, refused: bool, reply: SmtpReply,
                             report: DeliveryReport) -> None:  # fmt: skip
        """Many relay refusals in a row pause the campaign instead of burning its list."""
        self.refusals[campaign] = self.refusals.get(campaign, 0) + 1 if refused else 0
        limit = self.settings.delivery.pause_after_refusals
        if self.refusals[campaign] < limit or campaign in report.paused:
            return
        report.paused.append(campaign)
        reason = f"the relay refused {limit} messages in a row; last: {reply}"
        logger.error(f"campaign {campaign} paused: {reason}; fix the relay or its settings, "
                     f"then run `mailer campaign resume {campaign}`")  # fmt: skip
        await asyncio.to_thread(self._pause, campaign, reason)

    def _pause(self, campaign: str, reason: str) -> None:
        with self.workspace.engine.begin() as connection:
            pause(connection, self.settings, campaign, reason, self.workspace.clock.now())
