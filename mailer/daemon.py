"""`mailer run` and `mailer tick`: the engine's tick, then delivery of what it queued.

APScheduler is the clock, the database the truth: each tick is an idempotent function of
(settings, database, now), so a restart or a second daemon loses or repeats nothing. Delivery
runs continuously beside the ticks, and the tracking endpoint is served in the same event loop.
SIGTERM and SIGINT stop all three cleanly: the running tick finishes, SMTP transactions in
flight finish, unsent claimed rows are given back, buffered opens and clicks are written,
exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import OperationalError

from mailer.campaigns.engine import tick
from mailer.config import Smtp
from mailer.consent.checkpoints import write_daily as write_daily_checkpoint
from mailer.delivery.relay import is_loopback
from mailer.delivery.worker import Deliverer, run_loop
from mailer.errors import MailerError
from mailer.logs import logger
from mailer.metrics import count_tick, timed_tick
from mailer.outage import Outage
from mailer.retention import Pruned, run_retention
from mailer.returns.inbound import start_inbound
from mailer.tracking.serve import EmbeddedServer, configure, listen
from mailer.webhooks_out.sender import WebhookSender
from mailer.workspace import Workspace


def tick_and_deliver(workspace: Workspace, deliverer: Deliverer,
                     now: datetime | None = None) -> dict[str, int]:  # fmt: skip
    """One tick at `now` (default: the clock's time), then deliver everything due; the
    counts of both (skipped: steps whose condition was false, and messages consent gate 2
    stopped)."""
    counts = tick(workspace.engine, workspace.settings, now or workspace.clock.now()).as_dict()
    delivered = deliverer.deliver(now).counts()
    counts["skipped"] += delivered.pop("skipped")
    return counts | delivered


def simulate(workspace: Workspace, start: datetime, until: datetime,
             deliver_to_relay: bool = False) -> dict[str, dict[str, int]]:  # fmt: skip
    """Tick and deliver every hour from `start` to `until`, with the clock moved: a trial of
    days or weeks in seconds. The counts summed per day. Refused (MailerError) when the relay
    is not on this machine, unless `deliver_to_relay`: the trial's mail is real mail."""
    refusal = trial_refusal(workspace.settings.smtp, deliver_to_relay)
    if refusal is not None:
        raise MailerError(f"{workspace.settings.source}: {refusal}")
    days: dict[str, dict[str, int]] = {}
    deliverer = Deliverer(workspace)
    try:
        moment = start
        while moment <= until:
            counts = tick_and_deliver(workspace, deliverer, moment)
            day = days.setdefault(moment.strftime("%Y-%m-%d"), dict.fromkeys(counts, 0))
            for name, count in counts.items():
                day[name] += count
            moment += timedelta(hours=1)
    finally:
        deliverer.close()
    return days


def trial_refusal(smtp: Smtp, deliver_to_relay: bool) -> str | None:
    """Why a trial with a moved clock must not send through this relay, or None: a relay off
    this machine delivers to real people, with a future Date: and DKIM t=."""
    if deliver_to_relay or is_loopback(smtp.host):
        return None
    return (f"tick --until would send real mail through {smtp.host}:{smtp.port}, dated in "
            f"the future (Date:, DKIM t=); point [smtp] at `mailer sink` on 127.0.0.1, or "
            f"pass --deliver-to-relay to send it anyway")  # fmt: skip


RUN_ELSEWHERE = "set tracking.port (or MAILER_TRACKING__PORT), or run with --no-serve"


def run(workspace: Workspace, every: timedelta, serve: bool = True) -> None:
    scheduler = BackgroundScheduler(timezone=UTC)

    ticks_away = Outage("the tick")

    @timed_tick
    def tick_job() -> None:
        now = workspace.clock.now()
        try:
            report = tick(workspace.engine, workspace.settings, now)
        except OperationalError as error:  # the database away: said without a traceback
            ticks_away.failed(error)
            return
        except Exception:  # one bad tick is logged; the next one runs as usual
            logger.exception("tick failed")
            return
        ticks_away.answered()
        count_tick(report.as_dict())
        logger.info("tick", extra={"now": now.isoformat(), **report.as_dict()})

    scheduler.add_job(tick_job, "interval", seconds=every.total_seconds(), id="tick",
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)  # fmt: skip
    if workspace.settings.consent.checkpoint_dir is not None:
        folder = workspace.settings.path(workspace.settings.consent.checkpoint_dir)
        scheduler.add_job(lambda: checkpoint_job(workspace, folder), "interval", hours=1,
                          id="checkpoint", next_run_time=datetime.now(UTC), max_instances=1,
                          coalesce=True)  # fmt: skip
    # [retention]: old opens and clicks rolled up, old click targets cleared; small batches.
    scheduler.add_job(lambda: retention_job(workspace), "interval", days=1, id="retention",
                      next_run_time=datetime.now(UTC) + timedelta(minutes=5), max_instances=1,
                      coalesce=True)  # fmt: skip
    deliverer = Deliverer(workspace)
    # Bound before the first tick: a port in use stops `mailer run` at once, in one line.
    listening = listen(workspace, None, None, fix=RUN_ELSEWHERE) if serve else None
    try:  # [inbound] enabled: bounces, mailto: unsubscribes and ARF reports over SMTP too
        inbound = start_inbound(workspace) if workspace.settings.inbound.enabled else None
    except MailerError:
        if listening is not None:
            listening.close()
        raise
    logger.info("started", extra={"tick_every": str(every), "worker": deliverer.owner})
    scheduler.start()
    try:
        run_loop(_deliver_until_stopped(workspace, deliverer, listening))
    finally:
        scheduler.shutdown(wait=True)  # the running tick finishes
        deliverer.close()
        if listening is not None:
            listening.close()
        if inbound is not None:  # messages in hand are processed; the rest wait in new/
            inbound.stop()
    logger.info("stopped")


def checkpoint_job(workspace: Workspace, folder: Path) -> Path | None:
    """Today's signed ledger checkpoint in `folder`, at the clock's time; hourly, idempotent."""
    try:
        with workspace.engine.connect() as connection:
            written = write_daily_checkpoint(connection, folder, workspace.clock.now())
    except Exception:  # a broken ledger or a full disk is logged; the daemon keeps sending
        logger.exception("ledger checkpoint failed")
        return None
    if written is not None:
        logger.info("ledger checkpoint", extra={"file": str(written)})
    return written


def retention_job(workspace: Workspace) -> Pruned | None:
    """[retention] at the clock's time; daily, idempotent (another daemon may run it too)."""
    try:
        pruned = run_retention(workspace.engine, workspace.settings, workspace.clock.now())
    except Exception:  # logged; the daemon keeps sending, the next day tries again
        logger.exception("retention failed")
        return None
    logger.info("retention", extra=pruned.as_dict())
    return pruned


async def _deliver_until_stopped(workspace: Workspace, deliverer: Deliverer,
                                 listening: socket.socket | None) -> None:  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stopping, signum, stop)
    endpoint: EmbeddedServer | None = None
    serving: asyncio.Task[None] | None = None
    if listening is not None:
        endpoint = EmbeddedServer(configure(workspace, None, None))
        serving = asyncio.create_task(endpoint.serve([listening]))
    poll = workspace.settings.delivery.poll.total_seconds()
    # Outgoing webhooks in their own task: a slow or dead endpoint never holds up sending.
    webhooks = WebhookSender(workspace.engine, workspace.settings, workspace.clock)
    posting = asyncio.create_task(webhooks.run(stop, poll))
    away = Outage("delivery")
    while not stop.is_set():
        try:
            report = await deliverer.drain(stop=stop)
        except OperationalError as error:  # the database away: said without a traceback
            away.failed(error)
        except Exception:  # anything else: try again after a pause
            logger.exception("delivery failed")
        else:
            away.answered()
            if any(report.counts().values()):
                logger.info("delivered", extra={**report.counts(), "bounced": report.bounced})
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll)
    if endpoint and serving:  # requests in flight finish; buffered opens and clicks are written
        endpoint.should_exit = True
        await serving
    await posting  # POSTs in flight finish (each within its timeout)
    await webhooks.close()


def _stopping(signum: int, stop: asyncio.Event) -> None:
    logger.info("stopping", extra={"signal": signal.Signals(signum).name})
    stop.set()
