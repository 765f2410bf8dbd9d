"""A TCP hop between a client under test and a real server on this machine, which sees each
chunk as it comes off the socket (to record what was written at once, or to hold answers)."""

from __future__ import annotations

import contextlib
import socket
import threading

LOOPBACK = "127.0.0.1"


class TcpHop:
    """Each connection made to `port` is joined to the server at (host, port); every chunk read
    from either side goes through `passing` before it is sent on."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._local = threading.local()  # the connection each piping thread carries
        threading.Thread(target=self._accept, daemon=True).start()

    def passing(self, data: bytes, from_client: bool) -> None:
        """Called with each chunk before it goes on (subclasses record, or delay)."""

    def connection(self) -> socket.socket:
        """In `passing`: the client's socket of the connection the chunk came on."""
        client: socket.socket = self._local.ends[0]
        return client

    def cut(self) -> None:
        """In `passing`: close both ends of the chunk's connection; the chunk goes nowhere."""
        for end in self._local.ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        for opened in [self._listener, *self._sockets]:
            opened.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._target)
                self._sockets += [client, server]
                for source, sink, from_client in ((client, server, True), (server, client, False)):
                    threading.Thread(
                        target=self._pipe, args=(source, sink, from_client, (client, server)),
                        daemon=True,
                    ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool,
              ends: tuple[socket.socket, socket.socket]) -> None:  # fmt: skip
        self._local.ends = ends
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self.passing(data, from_client)
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
