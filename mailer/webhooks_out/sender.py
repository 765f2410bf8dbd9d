"""POSTing due webhook rows: a few at a time, each bounded by its subscription's timeout, in
its own task beside delivery, so a slow or dead endpoint holds up only its own rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path

import httpx
from sqlalchemy import Engine

from mailer.clock import Clock
from mailer.config import Settings
from mailer.errors import SettingsError
from mailer.logs import logger
from mailer.webhooks_out.queue import (
    MAX_ATTEMPTS,
    Attempt,
    Due,
    claim,
    forget_delivered,
    record,
)
from mailer.webhooks_out.signature import sign

BATCH = 32  # rows claimed at a time
CONCURRENCY = 8  # POSTs in flight at once


def secret_of(settings: Settings, name: str) -> bytes:
    """The signing key of [webhooks.outgoing.NAME]: its environment variable, or its file."""
    hook = settings.webhooks.outgoing[name]
    if hook.secret is not None and hook.secret.get_secret_value():
        return hook.secret.get_secret_value().encode()
    variable = f"MAILER_WEBHOOKS__OUTGOING__{name.upper()}__SECRET"
    if hook.secret_file is None:
        raise SettingsError(f"webhooks.outgoing.{name}: no secret: set {variable}, or name a "
                            "file in secret_file")  # fmt: skip
    path = settings.path(hook.secret_file)
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise SettingsError(f"webhooks.outgoing.{name}.secret_file: cannot read {path} "
                            f"({reason}); or set {variable}") from None  # fmt: skip
    if not text:
        raise SettingsError(f"webhooks.outgoing.{name}.secret_file: {path} is empty")
    return text.encode()


class WebhookSender:
    """Delivers what is due at the clock's time. One per process; close() when done."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.client = httpx.AsyncClient(follow_redirects=False)
        self.slots = asyncio.Semaphore(CONCURRENCY)

    async def close(self) -> None:
        await self.client.aclose()

    async def deliver_due(self) -> Counter[str]:
        """Every row due now, until none is left: counts of delivered, retry and dead."""
        counts: Counter[str] = Counter()
        while True:
            claimed = await asyncio.to_thread(self._claim)
            if not claimed:
                break
            attempts = await asyncio.gather(*(self._attempt(due) for due in claimed))
            await asyncio.to_thread(self._record, list(attempts))
            for attempt in attempts:
                counts[self._ending(attempt)] += 1
            if len(claimed) < BATCH:
                break
        if counts:
            await asyncio.to_thread(self._forget)
        return counts

    async def run(self, stop: asyncio.Event, poll: float) -> None:
        """Deliver until `stop`; a database or network failure is logged and tried again."""
        while not stop.is_set():
            try:
                counts = await self.deliver_due()
            except Exception:
                logger.exception("webhook delivery failed")
            else:
                if counts:
                    logger.info("webhooks", extra=dict(counts))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)

    def _ending(self, attempt: Attempt) -> str:
        if attempt.error is None:
            return "delivered"
        return "dead" if attempt.attempts >= MAX_ATTEMPTS else "retry"

    def _claim(self) -> list[Due]:
        with self.engine.begin() as connection:
            return claim(connection, self.settings, self.clock.now(), BATCH)

    def _record(self, attempts: list[Attempt]) -> None:
        with self.engine.begin() as connection:
            record(connection, attempts, self.clock.now())

    def _forget(self) -> None:
        with self.engine.begin() as connection:
            forget_delivered(connection, self.settings, self.clock.now())

    async def _attempt(self, due: Due) -> Attempt:
        async with self.slots:
            error = await self._post(due)
        if error is not None:
            logger.warning("webhook not delivered", extra={"subscription": due.subscription,
                           "event": due.payload.get("id"), "error": error})  # fmt: skip
        return Attempt(due.id, due.attempts, error)

    async def _post(self, due: Due) -> str | None:
        """None when delivered, else why not (what the next attempt is told to the operator)."""
        hook = self.settings.webhooks.outgoing.get(due.subscription)
        if hook is None:
            return "the subscription is no longer in settings"
        try:
            secret = secret_of(self.settings, due.subscription)
        except SettingsError as error:
            return str(error)
        body = json.dumps(due.payload, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = int(time.time())  # the receiver compares it with its own wall clock
        headers = {"Content-Type": "application/json", "User-Agent": "mailer-webhooks/1",
                   "Mailer-Webhook-Id": str(due.payload.get("id", due.id)),
                   "Mailer-Webhook-Timestamp": str(timestamp),
                   "Mailer-Signature": sign(secret, timestamp, body)}  # fmt: skip
        try:
            answer = await self.client.post(hook.url, content=body, headers=headers,
                                            timeout=hook.timeout.total_seconds())  # fmt: skip
        except httpx.TimeoutException:
            return f"no answer within {hook.timeout.total_seconds():g} s"
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if 200 <= answer.status_code < 300:
            return None
        return f"HTTP {answer.status_code}: {answer.text[:200]}"


def deliver_once(engine: Engine, settings: Settings, clock: Clock) -> Counter[str]:
    """Deliver everything due now, then return (`mailer webhooks deliver --once`)."""

    async def drain() -> Counter[str]:
        sender = WebhookSender(engine, settings, clock)
        try:
            return await sender.deliver_due()
        finally:
            await sender.close()

    return asyncio.run(drain())
