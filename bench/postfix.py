"""The reference of the send benchmark: Postfix's standalone test programs, `smtp-source`
pushing messages into `smtp-sink` on 127.0.0.1 (Debian's postfix package, installed by
`make bench-tools`; the postfix daemon is never started).

smtp-sink announces PIPELINING and 8BITMIME, sets no SIZE limit and throws every message away;
it does not announce SMTPUTF8 (Postfix 3.7 has no option for it), so a client that checks the
EHLO reply (aiosmtplib does) must send it ASCII envelope addresses. smtp-source sends the exact
bytes of a message file over `sessions` parallel connections, each kept open for the next
message (-d), as mailer's connection pool does; it does not pipeline.

    python bench/postfix.py    # a quick demo: 12,000-byte messages, 10 and 4 sessions
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

SMTP_SINK = Path("/usr/sbin/smtp-sink")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")
HOST = "127.0.0.1"
SENDER = "bench@example.com"
RECIPIENT = "reader@example.com"
BODY_LINE = 76  # characters of a full body line, CRLF not counted


def require_postfix() -> None:
    """Exit with a clear message when smtp-sink or smtp-source is missing."""
    missing = [str(path) for path in (SMTP_SINK, SMTP_SOURCE) if not os.access(path, os.X_OK)]
    if missing:
        sys.exit(f"{' and '.join(missing)} missing (Debian's postfix): run `make bench-tools`")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def mailer_sessions() -> int:
    """The number of SMTP connections mailer keeps by default (its `smtp.pool_size`)."""
    from mailer.config import Smtp

    return Smtp().pool_size


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time that a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SmtpSink:
    """`smtp-sink` on 127.0.0.1:port, accepting and discarding every message, while the `with`
    block lasts. Its counters (-c) go to a file, so `delivered()` can be read at any time."""

    def __init__(self, port: int | None = None, *, backlog: int = 4096,
                 max_sessions: int = 1024) -> None:  # fmt: skip
        self.port = port if port is not None else free_port()
        self.backlog = backlog
        self.max_sessions = max_sessions
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        """The pid of the smtp-sink process (to measure its CPU, see `cpu_seconds`)."""
        if self._process is None:
            raise RuntimeError("smtp-sink is not running")
        return self._process.pid

    @property
    def _counters(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("smtp-sink is not running")
        return Path(self._workdir.name) / "counters"

    def __enter__(self) -> SmtpSink:
        require_postfix()
        self._workdir = tempfile.TemporaryDirectory(prefix="smtp-sink-")
        command = [str(SMTP_SINK), "-c", "-m", str(self.max_sessions)]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without -u
            command += ["-u", "nobody"]
        command += [f"{HOST}:{self.port}", str(self.backlog)]
        stderr_path = self._counters.with_name("stderr")
        with self._counters.open("wb") as counters, stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                             stdout=counters, stderr=stderr)  # fmt: skip
        try:
            self._wait_until_listening(timeout=10.0)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_listening(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                error = self._counters.with_name("stderr").read_text(errors="replace").strip()
                raise RuntimeError(f"smtp-sink exited ({self._process.returncode}): {error}")
            try:  # the greeting tells smtp-sink from another program on the port
                with socket.create_connection((HOST, self.port), timeout=1.0) as probe:
                    if probe.recv(256).startswith(b"220 smtp-sink"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"smtp-sink does not listen on {HOST}:{self.port}")
            time.sleep(0.02)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:  # fmt: skip
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def delivered(self) -> int:
        """Messages accepted so far (smtp-sink's `mesg=` counter, updated at each ".")."""
        with self._counters.open("rb") as counters:
            size = counters.seek(0, os.SEEK_END)
            counters.seek(max(0, size - 128))
            records = counters.read().split(b"\r")
        for record in reversed(records):
            fields = dict(f.split(b"=", 1) for f in record.split() if b"=" in f)
            if b"mesg" in fields:
                return int(fields[b"mesg"])
        return 0

    def cpu_seconds(self) -> float:
        """CPU time (user plus system) that smtp-sink has used so far."""
        return process_cpu_seconds(self.pid)


def message_of_size(size: int) -> bytes:
    """A plain-text message (headers and body, CRLF lines, no line starting with ".") of
    exactly `size` bytes as sent between DATA and the final ".\r\n"."""
    headers = (f"From: Bench <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n"
               "Subject: The same size as mailer's message\r\n"
               "Date: Mon, 1 Jun 2026 09:00:00 +0000\r\n"
               "Message-ID: <bench.postfix@example.com>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
               "\r\n").encode()  # fmt: skip
    body = size - len(headers)
    if body < BODY_LINE + 2:
        raise ValueError(f"a message of {size} bytes is too small (at least {len(headers) + 78})")
    full, rest = divmod(body, BODY_LINE + 2)
    lines = [b"x" * BODY_LINE] * full
    if rest == 1:  # no line is 1 byte long: one full line gets one more character
        lines[-1] += b"x"
    elif rest:
        lines.append(b"x" * (rest - 2))
    message = headers + b"".join(line + b"\r\n" for line in lines)
    assert len(message) == size
    return message


@dataclass(frozen=True)
class SourceRun:
    """One smtp-source run: messages sent, wall time and smtp-source's own CPU time."""

    messages: int
    sessions: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds


def smtp_source_run(port: int, message: bytes, messages: int, sessions: int = 10, *,
                    reuse_connections: bool = True) -> SourceRun:  # fmt: skip
    """Send `messages` copies of `message` (CRLF lines) to 127.0.0.1:port with smtp-source over
    `sessions` parallel connections. smtp-source stops at the first reply that is not a
    success, so a run that returns delivered every message."""
    require_postfix()
    with tempfile.TemporaryDirectory(prefix="smtp-source-") as workdir:
        path = Path(workdir) / "message"
        # smtp-source -F sends each line of the file followed by CRLF (and dot-stuffs).
        lines = message.split(b"\r\n")
        if lines[-1] == b"":
            lines.pop()
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        command = [str(SMTP_SOURCE), "-s", str(sessions), "-m", str(messages), "-F", str(path),
                   "-M", "bench.example.com", "-f", SENDER, "-t", RECIPIENT]  # fmt: skip
        if reuse_connections:
            command.append("-d")
        command.append(f"{HOST}:{port}")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        error = (done.stderr or done.stdout).decode(errors="replace").strip()
        raise RuntimeError(f"smtp-source failed ({done.returncode}): {error}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return SourceRun(messages=messages, sessions=sessions, seconds=seconds, cpu_seconds=cpu)


def smtp_source_rate(port: int, message_size: int, messages: int, sessions: int = 10) -> float:
    """Messages per second that smtp-source delivers to the sink on `port`, messages of
    `message_size` bytes over `sessions` connections (pass mailer's pool size, see
    `mailer_sessions`, to measure with the sessions mailer uses)."""
    return smtp_source_run(port, message_of_size(message_size), messages, sessions).rate


def main() -> None:
    """A quick demo: 20,000 messages of 12,000 bytes, with 10 sessions and with mailer's."""
    require_postfix()
    size, messages = 12_000, 20_000
    print(f"smtp-source -> smtp-sink, {messages:,} messages of {size:,} bytes on {HOST}")
    message = message_of_size(size)
    for sessions in sorted({10, mailer_sessions()}, reverse=True):
        with SmtpSink() as sink:
            run = smtp_source_run(sink.port, message, messages, sessions)
            delivered, sink_cpu = sink.delivered(), sink.cpu_seconds()
        if delivered != messages:
            raise RuntimeError(f"smtp-sink counted {delivered} messages, not {messages}")
        print(f"{sessions:3d} sessions: {run.rate:9,.0f} msgs/s ({run.seconds:.2f} s; CPU "
              f"smtp-source {run.cpu_seconds:.2f} s, smtp-sink {sink_cpu:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
