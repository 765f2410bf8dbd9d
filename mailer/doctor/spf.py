"""Does the envelope domain's SPF record authorise an IP? check_host() of RFC 7208, for the
mechanisms a sender publishes (ip4, ip6, a, mx, include, exists, redirect, all); macros and
ptr (deprecated, RFC 7208 5.5) are not judged, which the result says."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from mailer.doctor.lookup import Lookup, LookupFailed

Result = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]

LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: more DNS-querying terms than this is a permerror
_QUALIFIERS: dict[str, Result] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_TERM = re.compile(r"([+\-~?]?)([a-z][a-z0-9_.\-]*)([:=/]?)(.*)", re.IGNORECASE)


@dataclass(frozen=True)
class SpfVerdict:
    result: Result
    why: str  # the term that decided, or what is wrong with the record
    record: str | None = None  # the top-level record, when there is one


class _PermError(Exception):
    pass


class _Evaluation:
    def __init__(self, lookup: Lookup, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        self.lookup = lookup
        self.ip = ip
        self.lookups = 0

    def count(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > LOOKUP_LIMIT:
            raise _PermError(
                f"more than {LOOKUP_LIMIT} DNS lookups (at '{term}'); receivers "
                "stop there and treat the record as broken"
            )

    def record(self, domain: str) -> str | None:
        records = [
            text
            for text in self.lookup.txt(domain)
            if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")
        ]
        if len(records) > 1:
            raise _PermError(f"{domain} publishes {len(records)} SPF records; it must be one")
        return records[0] if records else None

    def check_host(self, domain: str) -> tuple[Result, str]:
        text = self.record(domain)
        if text is None:
            return "none", f"{domain} publishes no SPF record"
        redirect = None
        for term in text.split()[1:]:
            match = _TERM.fullmatch(term)
            if match is None:
                raise _PermError(f"'{term}' in the SPF record of {domain} is not a term")
            qualifier, name, separator, value = match.groups()
            name = name.lower()
            if separator == "=":
                if name == "redirect":
                    redirect = value
                continue  # other modifiers (exp=, unknown ones) change no result
            if self.matches(domain, name, separator, value, term):
                return _QUALIFIERS[qualifier or "+"], f"'{term}' in {domain}"
        if redirect is not None:
            self.count(f"redirect={redirect}")
            result, why = self.check_host(redirect)
            if result == "none":
                raise _PermError(f"redirect={redirect}: {redirect} has no SPF record")
            return result, why
        return "neutral", f"no term of {domain}'s record matches, and it ends without 'all'"

    def matches(self, domain: str, name: str, separator: str, value: str, term: str) -> bool:
        if "%" in value:
            raise _PermError(
                f"'{term}' uses a macro, which this check does not expand; "
                "ask your provider's checker"
            )
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise _PermError(f"'{term}' is not an address or network") from None
            return self.ip.version == network.version and self.ip in network
        if name == "include":
            self.count(term)
            result, _ = self.check_host(value)
            if result == "none":
                raise _PermError(f"'{term}': {value} has no SPF record")
            return result == "pass"
        if name in ("a", "mx"):
            self.count(term)
            target, v4, v6 = _domain_and_prefixes(domain, separator, value, term)
            hosts = [target] if name == "a" else [host for _, host in self.lookup.mx(target)]
            if len(hosts) > LOOKUP_LIMIT:  # RFC 7208 4.6.4: at most 10 MX names
                raise _PermError(f"'{term}': {target} has more than {LOOKUP_LIMIT} MX hosts")
            prefix = v4 if self.ip.version == 4 else v6
            return any(
                self.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False)
                for host in hosts
                if host
                for address in self.lookup.addresses(host)
                if ipaddress.ip_address(address).version == self.ip.version
            )
        if name == "exists":
            self.count(term)
            return bool(self.lookup.addresses(value))
        if name == "ptr":
            self.count(term)
            return False  # deprecated and not judged: a receiver may not honour it either
        raise _PermError(f"'{term}': unknown mechanism '{name}'")


def _domain_and_prefixes(
    domain: str, separator: str, value: str, term: str
) -> tuple[str, int, int]:
    """a[:domain][/v4-prefix][//v6-prefix] and the same for mx."""
    text = (":" + value) if separator == ":" else (separator + value)
    target, _, cidr = text.removeprefix(":").partition("/")
    v4_text, _, v6_text = cidr.partition("//")
    if cidr.startswith("/"):  # only a v6 prefix: "a//64"
        v4_text, v6_text = "", cidr[1:]
    try:
        v4 = int(v4_text) if v4_text else 32
        v6 = int(v6_text) if v6_text else 128
    except ValueError:
        raise _PermError(f"'{term}' has a prefix length that is not a number") from None
    return target or domain, v4, v6


def check_host(lookup: Lookup, domain: str, ip: str) -> SpfVerdict:
    """What a receiver concludes for mail from `ip` with an envelope sender at `domain`."""
    evaluation = _Evaluation(lookup, ipaddress.ip_address(ip))
    try:
        record = evaluation.record(domain)
        result, why = evaluation.check_host(domain)
    except _PermError as error:
        return SpfVerdict("permerror", str(error))
    except LookupFailed as error:
        return SpfVerdict("temperror", f"no answer from the DNS: {error}")
    return SpfVerdict(result, why, record)
