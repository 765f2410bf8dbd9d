"""A small authoritative DNS server on loopback: answers UDP questions from one zone text with
dnspython's zone and message APIs, in a thread, on an ephemeral port."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.zone

_STOP = b"stop"


class ZoneServer:
    def __init__(self, zone_text: str, origin: str = "example.") -> None:
        self.zone = dns.zone.from_text(zone_text, origin=origin, relativize=False)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.nameserver = f"127.0.0.1:{self.port}"
        self.questions: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ZoneServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.socket.sendto(_STOP, ("127.0.0.1", self.port))  # wakes the blocking recvfrom
        self._thread.join()
        self.socket.close()

    def _serve(self) -> None:
        while True:
            data, client = self.socket.recvfrom(65535)
            if data == _STOP:
                return
            self.socket.sendto(self.answer(data), client)

    def answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        self.questions.append(f"{dns.rdatatype.to_text(question.rdtype)} {question.name}")
        node = self.zone.get_node(question.name)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            rdataset = node.get_rdataset(question.rdclass, question.rdtype)
            if rdataset is not None:
                rrset = response.find_rrset(
                    response.answer, question.name, question.rdclass, question.rdtype, create=True
                )
                rrset.update(rdataset)
        size = query.payload if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=size)
        except dns.exception.TooBig:  # RFC 1035 4.2.1: truncated, ask again over TCP
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()
