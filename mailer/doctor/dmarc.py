"""The DMARC policy that covers a From domain, and whether our DKIM and envelope domains are
aligned with it (RFC 7489 3.1).

The policy, and the organizational domain that relaxed alignment compares, are found by the DNS
tree walk of DMARCbis (_dmarc at the domain, then at each parent below the top-level domain),
so no copy of the Public Suffix List is needed."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.doctor.lookup import Lookup

MAX_WALK = 8  # DMARCbis: the walk asks at most eight names


@dataclass(frozen=True)
class DmarcPolicy:
    found_at: str  # the domain whose _dmarc record applies
    record: str
    tags: dict[str, str]

    @property
    def policy(self) -> str:
        return self.tags.get("p", "").lower()


def aligned(
    lookup: Lookup, policy: DmarcPolicy, from_domain: str, other: str, mode_tag: str
) -> bool:
    """Strict (`adkim=s`, `aspf=s`): the same name; relaxed, the default: the same
    organizational domain."""
    from_domain, other = from_domain.lower().rstrip("."), other.lower().rstrip(".")
    if from_domain == other:
        return True
    if policy.tags.get(mode_tag, "r").lower() == "s":
        return False
    return organizational_domain(lookup, from_domain) == organizational_domain(lookup, other)


def organizational_domain(lookup: Lookup, domain: str) -> str:
    """DMARCbis 4.10.2: the name with the fewest labels that publishes a DMARC record other
    than a public suffix's (psd=y); the domain itself when none does."""
    for candidate in reversed(_walk(domain)):
        records = _records(lookup, candidate)
        if len(records) == 1 and parse_tags(records[0]).get("psd", "u").lower() != "y":
            return candidate
    return domain


def parse_tags(record: str) -> dict[str, str]:
    """`v=DMARC1; p=none; rua=...` (also DKIM's `v=DKIM1; k=rsa; p=...`) as a dict."""
    tags = {}
    for part in record.split(";"):
        name, separator, value = part.partition("=")
        if separator:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def _walk(domain: str) -> list[str]:
    """The names the tree walk asks about, longest first."""
    labels = domain.lower().rstrip(".").split(".")
    names = [".".join(labels[start:]) for start in range(len(labels) - 1)]
    if len(names) > MAX_WALK:  # DMARCbis 4.10.1: the name itself, then the last seven
        names = names[:1] + names[-(MAX_WALK - 1) :]
    return names


def _records(lookup: Lookup, domain: str) -> list[str]:
    return [
        text
        for text in lookup.txt(f"_dmarc.{domain}")
        if text.replace(" ", "").lower().split(";")[0] == "v=dmarc1"
    ]


def find_policy(lookup: Lookup, from_domain: str) -> DmarcPolicy | None:
    """The first record found walking up from the From domain."""
    for domain in _walk(from_domain):
        records = _records(lookup, domain)
        if len(records) == 1:  # RFC 7489 6.6.3: several records count as none
            return DmarcPolicy(domain, records[0], parse_tags(records[0]))
    return None
