"""DNS questions the doctor asks, over one dnspython resolver: the system's, or a given
nameserver (`--nameserver HOST:PORT`, which the tests point at a zone served on loopback)."""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdata import Rdata
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from mailer.errors import MailerError

TIMEOUT = 5.0  # seconds for one question, every retry included
EDNS_PAYLOAD = 1232  # the size DNS Flag Day 2020 settled on: no fragmented UDP


class LookupFailed(Exception):
    """The DNS gave no answer (timeout, SERVFAIL): a temporary error, not "no such record"."""


def resolver_for(nameserver: str | None) -> dns.resolver.Resolver:
    """The system resolver, or one that asks only `nameserver` ("HOST" or "HOST:PORT",
    "[v6]:PORT" for IPv6)."""
    if nameserver is None:
        resolver = dns.resolver.Resolver()
    else:
        host, port = _host_port(nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = TIMEOUT
    resolver.use_edns(0, 0, EDNS_PAYLOAD)  # a 2048-bit DKIM key does not fit in 512 bytes
    return resolver


def _host_port(text: str) -> tuple[str, int]:
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise MailerError(
            f"--nameserver {text}: write an IP address and optional port, "
            "e.g. 127.0.0.1:5353 or [::1]:53"
        )
    return host, number


class Lookup:
    """Answers as plain values: no record is an empty list, a failed question LookupFailed."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def _answer(self, name: str, rdtype: str) -> list[Rdata]:
        try:
            answer = self.resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
            raise LookupFailed(f"{rdtype} {name}: {error}") from None
        except dns.name.EmptyLabel:
            raise LookupFailed(f"{rdtype} {name}: not a domain name") from None
        return list(answer)

    def txt(self, name: str) -> list[str]:
        """Each TXT record, its strings joined (RFC 7208 3.3: one long record, many strings)."""
        return [
            b"".join(record.strings).decode("utf-8", "replace")
            for record in self._answer(name, "TXT")
            if isinstance(record, TXT)
        ]

    def addresses(self, name: str) -> list[str]:
        """The A and AAAA addresses of `name`."""
        records = self._answer(name, "A") + self._answer(name, "AAAA")
        return [str(record.address) for record in records if isinstance(record, A | AAAA)]

    def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, host) of each MX, best first; host "" for a null MX (RFC 7505)."""
        return sorted(
            (record.preference, record.exchange.to_text(omit_final_dot=True).strip("."))
            for record in self._answer(name, "MX")
            if isinstance(record, MX)
        )
