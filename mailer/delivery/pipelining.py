"""The relay's replies, every one kept and read in order, for a session that sends MAIL, RCPT
and DATA in one write (RFC 2920 PIPELINING).

aiosmtplib's protocol parses one reply per `read_response()` and drops whatever arrives while
no reply is awaited, so the three replies to a pipelined write would be lost. aiosmtplib still
does the complex parts (connect, STARTTLS, AUTH, EHLO); then the connection's transport is
handed to `Replies` with asyncio's public `Transport.set_protocol`. This way leans on no private
attribute of aiosmtplib: `Replies` forwards the end of the connection to aiosmtplib's protocol
(its public `connection_lost`), so `SMTP.is_connected` and `SMTP.close()` keep working. After
the hand-over every command (RSET, QUIT too) goes through `Replies`: aiosmtplib's own would wait
for a reply that no longer reaches it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

from aiosmtplib import SMTPResponse, SMTPServerDisconnected

# A reply may not pass this, its lines together (aiosmtplib's bound): memory stays bounded if
# a server streams bytes with no line end or continuation lines without end.
LONGEST_REPLY = 32 * 1024


class ReplyParser:
    """SMTP replies (RFC 5321 4.2) from the bytes as they arrive: a reply of several lines
    (`250-...`), a reply split across reads and several replies in one read."""

    def __init__(self) -> None:
        self._pending = bytearray()  # what follows the last complete line
        self._lines: list[bytes] = []  # the texts of a multi-line reply's lines so far
        self._size = 0

    def feed(self, data: bytes) -> list[SMTPResponse]:
        """The replies completed by `data`; ValueError on a line that is no reply."""
        self._pending += data
        replies: list[SMTPResponse] = []
        start = 0
        while (end := self._pending.find(b"\n", start)) != -1:
            line = bytes(self._pending[start:end])
            start = end + 1
            code = line[:3]
            if len(code) != 3 or not code.isdigit():
                text = line.rstrip(b"\r").decode("utf-8", "replace")
                raise ValueError(f"malformed reply line from the relay: {text!r}")
            self._lines.append(line[4:].strip(b" \t\r"))
            self._size += len(line)
            if line[3:4] != b"-":  # the last line of the reply
                message = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
                replies.append(SMTPResponse(int(code), message))
                self._lines, self._size = [], 0
        del self._pending[:start]
        if self._size + len(self._pending) > LONGEST_REPLY:
            raise ValueError(f"a reply from the relay longer than {LONGEST_REPLY} bytes")
        return replies


class Replies(asyncio.Protocol):
    """One connection to the relay after its greeting: commands written, replies read in the
    order the relay sent them, none dropped. A lost connection wakes a waiting reader."""

    def __init__(self, transport: asyncio.BaseTransport, previous: asyncio.BaseProtocol) -> None:
        """Take over `transport` from `previous` (aiosmtplib's protocol), which is told when
        the connection ends."""
        # asyncio's and uvloop's transports (uvloop's not asyncio.Transport subclasses) write.
        self._transport = cast(asyncio.WriteTransport, transport)
        self._previous = previous
        self._parser = ReplyParser()
        self._ready: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended: str | None = None  # why no more replies will come
        transport.set_protocol(self)

    def write(self, data: bytes) -> None:
        if self._ended is not None or self._transport.is_closing():
            raise SMTPServerDisconnected(self._ended or "Connection lost")
        self._transport.write(data)

    async def read(self) -> SMTPResponse:
        """The next reply; SMTPServerDisconnected when the connection ended before it."""
        while not self._ready:
            if self._ended is not None:
                raise SMTPServerDisconnected(self._ended)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._ready.popleft()

    # asyncio's callbacks

    def data_received(self, data: bytes) -> None:
        try:
            self._ready.extend(self._parser.feed(data))
        except ValueError as error:
            self._end(str(error))  # in step with the relay no more: this connection is done
            self._transport.close()
        if self._ready:
            self._wake()

    def eof_received(self) -> bool:
        self._end("Unexpected EOF received")
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"Connection lost: {exc}" if exc is not None else "Connection lost")
        self._previous.connection_lost(exc)  # aiosmtplib's SMTP closes its side

    def _end(self, reason: str) -> None:
        if self._ended is None:
            self._ended = reason
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
