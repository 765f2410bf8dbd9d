"""Rendering and DKIM signing off the event loop: in worker processes (both cores work, the
loop only does I/O), or in one thread of the delivering process when settings ask for 0
processes. Messages go in chunks, so a process pays the hand-over once per chunk."""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from mailer.clock import FrozenClock
from mailer.config import Settings
from mailer.contacts.model import Contact
from mailer.errors import MailerError
from mailer.render.message import MessageRenderer, RenderedMessage, problem

CHUNK = 40  # messages per hand-over to a render process


@dataclass(frozen=True)
class RenderJob:
    outbox_id: int
    message_key: str
    campaign: str
    step: str
    contact: Contact
    variant: str | None


@dataclass(frozen=True)
class Outgoing:
    """What the delivering process needs of a rendered message: the envelope, and the bytes
    ready for the wire (dot-stuffed, with the final "." line, RFC 5321 4.5.2)."""

    message_id: str
    envelope_from: str
    recipient: str
    smtputf8: bool
    links: list[str]
    wire: bytes


def wire_form(message: RenderedMessage) -> Outgoing:
    data = message.data if message.data.endswith(b"\r\n") else message.data + b"\r\n"
    # Every line ends in CRLF (render.mime writes them so), so a line starts after one.
    wire = (b"." if data.startswith(b".") else b"") + data.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    return Outgoing(message.message_id, message.envelope_from, message.recipient,
                    message.smtputf8, message.links, wire)  # fmt: skip


@dataclass(frozen=True)
class Rendered:
    outbox_id: int
    message: Outgoing | None
    error: str | None  # why this message could not be rendered


_renderer: MessageRenderer | None = None  # one per render process, made by _start


def _start(settings: Settings, delivering_pid: int) -> None:
    global _renderer
    from mailer.workspace import Workspace  # the workspace knows where the keys are

    _renderer = Workspace(settings, FrozenClock(datetime.now().astimezone())).renderer
    if delivering_pid != os.getpid():  # a render process, not a thread of the delivering one
        keep_out_of_collections()
        exit_with_parent(delivering_pid)


def keep_out_of_collections() -> None:
    """What is alive now (modules, settings, the renderer) lives as long as the process: it is
    left out of the collector's full passes, which otherwise walk it all every few hundred
    messages (8 µs a message). Garbage is collected first, so none is kept for good."""
    gc.collect()
    gc.freeze()


def exit_with_parent(pid: int) -> None:
    """End this worker process when process `pid` is gone, even killed with SIGKILL (a process
    pool's workers would otherwise wait for work forever)."""
    threading.Thread(target=_exit_with, args=(pid, _started(pid)), daemon=True).start()


def _exit_with(pid: int, started: bytes | None) -> None:
    while not _gone(pid, started):
        time.sleep(1)
    os._exit(0)


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command's name (state first); None when the
    process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):  # the second: it ended between open and read
        return None


def _started(pid: int) -> bytes | None:
    """When process `pid` started (clock ticks since boot), to tell it from a later process
    given the same id; None without /proc."""
    if not os.path.isdir("/proc/self"):
        return None
    fields = _stat(pid)
    return fields[19] if fields else None


def _gone(pid: int, started: bytes | None) -> bool:
    """Whether process `pid` (started at `started`) has ended. A process killed but not yet
    reaped by its own parent is a zombie, which os.kill still reaches: with /proc, a zombie
    and an id taken by another process count as gone too."""
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    fields = _stat(pid)
    return fields is None or fields[0] == b"Z" or fields[19] != started


def render_chunk(jobs: Sequence[RenderJob], now: datetime) -> list[Rendered]:
    assert _renderer is not None, "render_chunk runs in a process started by RenderPool"
    return [_render_one(_renderer, job, now) for job in jobs]


def _render_one(renderer: MessageRenderer, job: RenderJob, now: datetime) -> Rendered:
    try:
        step = renderer.step(job.campaign, job.step)
        message = renderer.render(job.campaign, step, job.contact, job.message_key, job.variant,
                                  now=now)  # fmt: skip
    except KeyError as error:
        return Rendered(job.outbox_id, None, f"campaign {error} is no longer in settings")
    except MailerError as error:  # a template error, or a step that settings no longer have
        return Rendered(job.outbox_id, None, str(error))
    except Exception as error:  # whatever else fails for this message fails it alone
        return Rendered(job.outbox_id, None, problem(error))
    # Made ready for the wire here, in parallel, not in the process that talks SMTP.
    return Rendered(job.outbox_id, wire_form(message), None)


class RenderPool:
    def __init__(self, settings: Settings) -> None:
        processes = settings.delivery.render_processes
        self.executor: Executor
        if processes:
            # forkserver: a clean child, not a fork of a process holding database connections
            # and threads.
            self.executor = ProcessPoolExecutor(
                processes, mp_context=multiprocessing.get_context("forkserver"),
                initializer=_start, initargs=(settings, os.getpid()),
            )  # fmt: skip
        else:
            self.executor = ThreadPoolExecutor(1, initializer=_start,
                                               initargs=(settings, os.getpid()))  # fmt: skip

    def submit(self, jobs: Sequence[RenderJob], now: datetime) -> Future[list[Rendered]]:
        return self.executor.submit(render_chunk, jobs, now)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
