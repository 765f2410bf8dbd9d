"""`mailer inbound`: the SMTP listener for what comes back. It takes mail for three kinds of
address only: bounces+TOKEN@ and unsubscribe+TOKEN@ the bounce domain (VERP bounces, the
mailto: of List-Unsubscribe) and the feedback-loop address of [inbound] (ARF reports).

Each message is written to the spool (Maildir-style: tmp/, fsync, rename into new/) before the
250: once we have said yes, a crash loses nothing, and the next start processes what new/ still
holds. Processing runs in a worker thread, one message at a time, and moves the file to cur/,
or to unparseable/ (kept, logged and counted, never dropped). A message whose processing fails
(the database is down, the relay a reply is forwarded through is down) stays in new/ and is
tried again RETRY_FIRST seconds later, then after twice as long each time up to RETRY_AT_MOST,
and at the next start.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.delivery.claims import token_outbox_id
from mailer.delivery.sink import trace_headers
from mailer.errors import MailerError
from mailer.listening import address, bind, cannot_listen, sleep_until
from mailer.logs import logger
from mailer.metrics import INBOUND, serve_metrics
from mailer.returns.classify import classify
from mailer.returns.effects import apply_mailto_unsubscribe, report_digest
from mailer.returns.ingest import process
from mailer.returns.replies import process_reply
from mailer.tokens import TokenKeys
from mailer.workspace import Workspace

WHO, FIX = "another mailer inbound?", "choose another port with --port or [inbound] port"
# local part -> token purpose (reply+: the Reply-To of [sender] reply_tracking)
PURPOSES = {"bounces": "bounce", "unsubscribe": "unsubscribe", "reply": "reply"}
NOT_OURS = "550 5.7.1 Relaying denied: this server takes mail for {domains} only"
NO_SUCH_USER = "550 5.1.1 No such user here"

Echo = Callable[[str], None]
RETRY_FIRST = 30.0  # seconds before a message whose processing failed is tried again ...
RETRY_AT_MOST = 3600.0  # ... doubling each time up to this
IN_HAND = float("inf")  # the due time of a failed message the worker is trying again
RETRY_POLL = 1.0  # seconds: how soon a closing listener's retry thread notices, at most


@dataclass(frozen=True)
class Mailboxes:
    """The addresses we take mail for, and what each one is."""

    bounce_domain: str
    fbl_address: str | None
    keys: TokenKeys

    @classmethod
    def of(cls, workspace: Workspace) -> Mailboxes:
        sender = workspace.settings.sender
        fbl = workspace.settings.inbound.fbl_address
        domain = sender.envelope_domain.lower()
        return cls(domain, fbl.lower() if fbl else None, workspace.renderer.keys)

    @property
    def domains(self) -> list[str]:
        fbl_domain = self.fbl_address.rpartition("@")[2] if self.fbl_address else None
        return sorted({self.bounce_domain} | ({fbl_domain} if fbl_domain else set()))

    def refusal(self, recipient: str) -> str | None:
        """The SMTP reply refusing `recipient` at RCPT, or None when it is ours."""
        domain = recipient.rpartition("@")[2].lower()
        if domain not in self.domains:
            return NOT_OURS.format(domains=", ".join(self.domains))
        if self.fbl_address is not None and recipient.lower() == self.fbl_address:
            return None
        if domain == self.bounce_domain and self.token_outbox(recipient) is not None:
            return None
        return NO_SUCH_USER

    def token_outbox(self, recipient: str) -> tuple[str, int] | None:
        """("bounces", "unsubscribe" or "reply", the outbox id its signed token names), or
        None."""
        local = recipient.rpartition("@")[0]
        prefix, plus, token = local.partition("+")
        purpose = PURPOSES.get(prefix.lower())
        if not plus or purpose is None:
            return None
        # A token that does not verify matches nothing (matching.py): refused at once.
        message = token_outbox_id(self.keys, purpose, token)
        return None if message is None else (prefix.lower(), message)


class Spool:
    """The folder that holds each accepted message: tmp/ while written, new/ once safe,
    cur/ processed, unparseable/ kept for a person to look at."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._numbers = itertools.count(1)
        for folder in ("tmp", "new", "cur", "unparseable"):
            (root / folder).mkdir(parents=True, exist_ok=True)

    def store(self, content: bytes) -> Path:
        """Written, flushed to disk and renamed into new/: on disk before we answer 250."""
        moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{moment}.{os.getpid()}_{next(self._numbers)}.{secrets.token_hex(4)}.eml"
        partial = self.root / "tmp" / name
        with partial.open("wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.root / "new" / name)
        _fsync_folder(self.root / "new")  # the rename itself survives a power cut
        return self.root / "new" / name

    def waiting(self) -> list[Path]:
        """What new/ holds: accepted, not yet processed (by arrival: names sort by time)."""
        return sorted((self.root / "new").iterdir())

    def move(self, path: Path, folder: str) -> Path:
        target = self.root / folder / path.name
        os.replace(path, target)
        return target

    def clear_partial(self) -> None:
        """Half-written files of a crash: never answered 250, so the sender tries again."""
        for partial in (self.root / "tmp").iterdir():
            partial.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def process_stored(workspace: Workspace, mailboxes: Mailboxes, stored: bytes, name: str) -> str:
    """One stored message acted on: "classification: action" ("unsubscribe" for mail to the
    mailto: address, which is a request whatever it says)."""
    sender, recipient, content = split_envelope(stored)
    now = workspace.clock.now()
    found = mailboxes.token_outbox(recipient)
    if found is not None and found[0] == "unsubscribe":
        evidence = {"digest": report_digest(content), "file": name, "source": "inbound",
                    "from": sender}  # fmt: skip
        with workspace.engine.begin() as connection:
            action = apply_mailto_unsubscribe(connection, workspace, found[1], evidence, now)
        return f"unsubscribe: {action}"
    if found is not None and found[0] == "reply":
        return process_reply(workspace, found[1], content, name, now)
    returned = classify(content)  # the message as sent to us: our trace lines are not in it
    if found is not None:  # the envelope's token (verified at RCPT) is the strongest match
        returned = replace(returned, verp_token=recipient.rpartition("@")[0].partition("+")[2])
    done = process(workspace, content, name, now, source="inbound", returned=returned)
    return f"{done.returned.classification}: {done.action_taken}"


def split_envelope(stored: bytes) -> tuple[str | None, str, bytes]:
    """(envelope sender or None for <>, envelope recipient, the message as received) of a file
    trace_headers began; a file put in new/ by hand is all message, for no recipient."""
    lines = stored.split(b"\r\n", 2)
    if len(lines) < 3 or not lines[0].startswith(b"Return-Path: <"):
        return None, "", stored
    if not lines[1].startswith(b"Delivered-To: "):
        return None, "", stored
    sender = lines[0].removeprefix(b"Return-Path: <").removesuffix(b">")
    recipient = lines[1].removeprefix(b"Delivered-To: ")
    decoded = sender.decode("utf-8", "surrogateescape")  # as aiosmtpd gave it (SMTPUTF8)
    return decoded or None, recipient.decode("utf-8", "surrogateescape"), lines[2]


class ReturnedMail:
    """The aiosmtpd handler: refuses at RCPT what is not ours, stores each message before its
    250, then hands it to a single worker thread (the event loop never waits on the database)."""

    def __init__(self, workspace: Workspace, spool: Spool, mailboxes: Mailboxes) -> None:
        self.workspace = workspace
        self.spool = spool
        self.mailboxes = mailboxes
        self.counts = dict.fromkeys(("processed", "unparseable", "failed"), 0)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-inbound")
        self._pending: set[Future[str]] = set()
        self._lock = threading.Lock()
        # Failed messages: their failures so far and when to try again (time.monotonic).
        self._retries: dict[Path, tuple[int, float]] = {}
        self._wake = threading.Condition()  # guards _retries and _closing
        self._closing = False
        self._retrier = threading.Thread(target=self._retry_when_due, daemon=True,
                                         name="mailer-inbound-retry")  # fmt: skip
        self._retrier.start()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          recipient: str, rcpt_options: list[str]) -> str:  # fmt: skip
        refusal = self.mailboxes.refusal(recipient)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(recipient)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        stored = []
        try:
            for recipient in envelope.rcpt_tos:  # one file each, as a mailbox files it
                message = trace_headers(envelope.mail_from, recipient) + content
                stored.append(await loop.run_in_executor(None, self.spool.store, message))
        except OSError as error:  # disk full: the sender keeps it and tries again later
            logger.error("inbound: cannot store a message", extra={"error": str(error)})
            return "451 4.3.0 Cannot store the message now; try again later"
        for path in stored:
            self.submit(path)
        return f"250 OK: stored as {', '.join(path.name for path in stored)}"

    def resume(self) -> int:
        """Process what new/ still holds (accepted before a crash or a stop); how many."""
        self.spool.clear_partial()
        waiting = self.spool.waiting()
        for path in waiting:
            self.submit(path)
        return len(waiting)

    def submit(self, path: Path) -> None:
        future = self._worker.submit(self._process, path)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def settle(self) -> None:
        """Wait until every message handed to the worker so far is processed."""
        with self._lock:
            pending = set(self._pending)
        wait(pending)

    def close(self) -> None:
        """Finish the messages in hand; the rest stay in new/ for the next start."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._retrier.join()
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _retry_when_due(self) -> None:
        """Hand each failed message to the worker again when its wait is over. Waits are
        slept (at most RETRY_POLL at a time), not a timed Condition.wait: under a moved clock
        (libfaketime, `make test-future`) a timed wait never times out; a sleep does."""
        while True:
            with self._wake:
                if self._closing:
                    return
                now = time.monotonic()
                for path, (failures, due) in list(self._retries.items()):
                    if due <= now:
                        self._retries[path] = (failures, IN_HAND)
                        self.submit(path)
                waits = [due - now for _, due in self._retries.values() if now < due < IN_HAND]
                if not waits:
                    self._wake.wait()  # until a message fails, or the listener closes
                    continue
            time.sleep(min(*waits, RETRY_POLL))

    def _done(self, future: Future[str]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _process(self, path: Path) -> str:
        try:
            outcome = process_stored(self.workspace, self.mailboxes, path.read_bytes(), path.name)
        except Exception:  # the database or the relay is down: kept in new/, tried again
            retry_in = self._retry_later(path)
            logger.exception("inbound: processing failed", extra={"file": str(path),
                                                                  "retry_in": retry_in})
            return self._count("failed")
        with self._wake:
            self._retries.pop(path, None)
        if outcome.startswith("unparseable:"):
            kept = self.spool.move(path, "unparseable")
            logger.warning("inbound: unparseable message kept", extra={"file": str(kept)})
            return self._count("unparseable")
        self.spool.move(path, "cur")
        logger.info("inbound", extra={"file": path.name, "result": outcome})
        return self._count("processed")

    def _retry_later(self, path: Path) -> float:
        """Seconds until `path` is tried again."""
        with self._wake:
            failures = self._retries.get(path, (0, 0.0))[0]
            wait = min(RETRY_FIRST * 2.0**failures, RETRY_AT_MOST)
            self._retries[path] = (failures + 1, time.monotonic() + wait)
            self._wake.notify()
        return wait

    def _count(self, result: str) -> str:
        with self._lock:
            self.counts[result] += 1
        INBOUND.labels(result).inc()
        return result


@dataclass
class Listening:
    """A running listener: its aiosmtpd controller (in a thread of its own) and handler."""

    controller: Controller
    handler: ReturnedMail

    def stop(self) -> None:
        self.controller.stop()
        self.handler.close()


def start_inbound(workspace: Workspace, host: str | None = None,
                  port: int | None = None) -> Listening:  # fmt: skip
    """The listener on host:port ([inbound] by default), new/ already handed to its worker."""
    settings = workspace.settings.inbound
    host, port = host or settings.host, port or settings.port
    mailboxes = Mailboxes.of(workspace)
    root = workspace.settings.path(settings.spool_dir)
    try:
        spool = Spool(root)
    except OSError as error:
        raise MailerError(f"cannot create the spool folder {root}: {error.strerror}; "
                          "set [inbound] spool_dir") from None  # fmt: skip
    # aiosmtpd's Controller reports a taken port only after its 5-second start timeout.
    bind(host, port, who=WHO, fix=FIX).close()
    handler = ReturnedMail(workspace, spool, mailboxes)
    controller = Controller(
        handler,
        hostname=host,
        port=port,
        server_hostname=mailboxes.bounce_domain,
        ident="mailer inbound",
        data_size_limit=settings.max_size,
        enable_SMTPUTF8=True,
    )
    try:
        controller.start()
    except OSError as error:  # taken between the check and now
        handler.close()
        raise MailerError(cannot_listen(host, port, error, WHO, FIX)) from None
    handler.resume()
    return Listening(controller, handler)


def serve_inbound(workspace: Workspace, host: str | None, port: int | None, echo: Echo) -> None:
    """Run the listener until SIGINT (Ctrl-C) or SIGTERM, then stop it and return."""
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    metrics = None
    try:
        if (metrics_port := workspace.settings.inbound.metrics_port) is not None:
            metrics = serve_metrics(workspace.settings.inbound.metrics_host, metrics_port,
                                    fix="set [inbound] metrics_port to a free port")  # fmt: skip
        listening = start_inbound(workspace, host, port)
        where = address(listening.controller.hostname, listening.controller.port)
        mailboxes = listening.handler.mailboxes
        taken = [f"bounces+…@ and unsubscribe+…@{mailboxes.bounce_domain}"]
        if workspace.settings.sender.reply_tracking:
            forward = workspace.settings.inbound.replies_to
            taken += [f"reply+…@{mailboxes.bounce_domain} (forwarded to {forward})"]
        taken += [mailboxes.fbl_address] if mailboxes.fbl_address else []
        echo(f"mailer inbound: listening on {where} for {', '.join(taken)}; spool "
             f"{listening.handler.spool.root}/ (Ctrl-C stops)")  # fmt: skip
        if metrics is not None:
            served = address(str(metrics.server_address[0]), metrics.server_address[1])
            echo(f"mailer inbound: metrics on http://{served}/metrics")
        sleep_until(stopping)
        listening.stop()
        counts = ", ".join(f"{count} {name}" for name, count in listening.handler.counts.items())
        echo(f"mailer inbound: stopped; {counts}")
    finally:
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        for number, handler in previous.items():
            signal.signal(number, handler)
