"""Apple's proxy addresses: Mail Privacy Protection fetches images through the iCloud Private
Relay network (the same ingress hosts, mask.icloud.com, and the same egress ranges) and from
Apple's own 17.0.0.0/8. The package ships a small file; `[tracking] apple_proxy_ranges_file`
points at a refreshed copy of Apple's published list
(https://mask-api.icloud.com/egress-ip-ranges.csv: `prefix,country,region,city,` per line)."""

from __future__ import annotations

import bisect
import functools
import ipaddress
from importlib import resources
from pathlib import Path

from mailer.config import Settings
from mailer.errors import MailerError
from mailer.logs import logger

SHIPPED = "apple_proxy_ranges.txt"


class ProxyRanges:
    """Address ranges, asked with `ip in ranges`: sorted, merged (start, end) pairs per family."""

    def __init__(self, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        spans = sorted((net.version, int(net.network_address), int(net.broadcast_address))
                       for net in networks)  # fmt: skip
        for version, start, end in spans:
            starts, ends = self._starts[version], self._ends[version]
            if ends and start <= ends[-1] + 1:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        self.count = len(networks)

    def __contains__(self, ip: object) -> bool:
        try:
            address = ipaddress.ip_address(str(ip))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        starts, ends = self._starts[address.version], self._ends[address.version]
        place = bisect.bisect_right(starts, int(address)) - 1
        return place >= 0 and int(address) <= ends[place]


def parse(text: str, source: str) -> ProxyRanges:
    """One range a line, its first comma-separated field (Apple's CSV, or a plain list);
    `#` starts a comment. A line that is not a range is skipped with a warning naming it."""
    networks = []
    for number, line in enumerate(text.splitlines(), 1):
        field = line.split("#", 1)[0].split(",", 1)[0].strip()
        if not field:
            continue
        try:
            networks.append(ipaddress.ip_network(field, strict=False))
        except ValueError:
            logger.warning(f"{source}:{number}: {field[:60]!r} is not an address range "
                           "(like 17.0.0.0/8 or 2a02:26f7::/32); line skipped")  # fmt: skip
    return ProxyRanges(networks)


@functools.lru_cache(maxsize=4)
def _load(path: str, modified: float) -> ProxyRanges:
    return parse(Path(path).read_text(encoding="utf-8", errors="replace"), path)


def load(path: Path | None) -> ProxyRanges:
    """The ranges in `path` (re-read when the file changes), or the shipped ones."""
    if path is None:
        shipped = resources.files("mailer.tracking").joinpath(SHIPPED)
        return _shipped(shipped.read_text(encoding="utf-8"))
    try:
        modified = path.stat().st_mtime
    except OSError as error:
        raise MailerError(
            f"[tracking] apple_proxy_ranges_file: cannot read {path} ({error.strerror}); "
            "download https://mask-api.icloud.com/egress-ip-ranges.csv there, or remove the "
            "setting to use the shipped ranges"
        ) from error
    return _load(str(path), modified)


def of_settings(settings: Settings) -> ProxyRanges:
    """The ranges `[tracking] apple_proxy_ranges_file` names, else the shipped ones; a
    MailerError when that file cannot be read. `mailer serve` and `mailer run` ask it at
    start and `mailer check` too: found only at the first write, a missing file held every open
    and click in memory, unwritten."""
    named = settings.tracking.apple_proxy_ranges_file
    return load(settings.path(named) if named else None)


@functools.lru_cache(maxsize=1)
def _shipped(text: str) -> ProxyRanges:
    return parse(text, SHIPPED)
