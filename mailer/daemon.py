"""`mailer run`: APScheduler is the clock, the database the truth. Each job is an idempotent
function of (settings, database, now), so a restart or a second daemon loses or repeats
nothing. SIGTERM and SIGINT stop it cleanly: the running tick finishes, then exit 0."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.schedulers.blocking import BlockingScheduler

from mailer.campaigns.engine import tick
from mailer.logs import logger
from mailer.workspace import Workspace


def run(workspace: Workspace, every: timedelta) -> None:
    scheduler = BlockingScheduler(timezone=UTC)

    def tick_job() -> None:
        now = workspace.clock.now()
        try:
            report = tick(workspace.engine, workspace.settings, now)
        except Exception:  # one bad tick is logged; the next one runs as usual
            logger.exception("tick failed")
            return
        logger.info("tick", extra={"now": now.isoformat(), **report.as_dict()})

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("stopping", extra={"signal": signal.Signals(signum).name})
        scheduler.shutdown(wait=True)

    scheduler.add_job(tick_job, "interval", seconds=every.total_seconds(), id="tick",
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)  # fmt: skip
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("started", extra={"tick_every": str(every)})
    scheduler.start()
    logger.info("stopped")
