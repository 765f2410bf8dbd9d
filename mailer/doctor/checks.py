"""The doctor's checks: each a plain function of the settings and a DNS `Lookup`, returning a
Finding with the fix. `diagnose` runs them all, then the bulk-sender checklist over them."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailer.config import Settings, relay_key
from mailer.doctor.dmarc import DmarcPolicy, aligned, find_policy, parse_tags
from mailer.doctor.findings import Finding, worst
from mailer.doctor.lookup import Lookup, LookupFailed
from mailer.doctor.spf import check_host
from mailer.errors import MailerError
from mailer.render.dkim import DkimKey, load_key
from mailer.returns.rates import Rates

Check = Callable[[Settings, Lookup], Finding]
RATE_PERIOD = timedelta(days=30)  # the complaint rate the doctor reads from the database
_LOCAL_RELAY = "localhost"


def envelope_domain(settings: Settings) -> str:
    """The domain of the envelope sender (bounces+TOKEN@...), the one SPF checks."""
    return settings.sender.envelope_domain


def check_spf(settings: Settings, lookup: Lookup) -> Finding:
    """SPF authorises every relay mail may leave through: [smtp] and each of its fallbacks,
    each named when there are several (the worst of them decides)."""
    domain = envelope_domain(settings)
    records = [text for text in lookup.txt(domain) if text.lower().startswith("v=spf1")]
    publish = (
        f'publish one TXT record at {domain}: "v=spf1 ip4:<your relay\'s address> -all" '
        "(or your provider's include:)"
    )
    if not records:
        return Finding("SPF", "fail", f"{domain} publishes no SPF record", publish)
    relays = settings.relays()
    found = [_spf_for_relay(domain, relay_key(name), relay.host, lookup) for name, relay in relays]
    if len(found) > 1:
        named = [(name, finding) for (name, _relay), finding in zip(relays, found, strict=True)]
        found = [Finding("SPF", worst(found),
                         "; ".join(f"relay {name}: {finding.detail}" for name, finding in named),
                         "; ".join(f"relay {name}: {finding.fix}"
                                   for name, finding in named if finding.fix))]  # fmt: skip
    if found[0].status == "fail":
        return found[0]
    if found[0].status == "warn":  # a local relay: what the record says, to check by hand
        return replace(found[0], detail=f"{found[0].detail}; {domain}: {records[0]}")
    if any(term.lstrip("+").lower() == "all" for term in records[0].split()):
        return Finding(
            "SPF",
            "warn",
            f"{domain}'s SPF ends in '+all': it authorises every server on the internet",
            "end the record with '-all' or '~all'",
        )
    return replace(found[0], detail=f"{found[0].detail}: {records[0]}")


def _spf_for_relay(domain: str, key: str, relay: str, lookup: Lookup) -> Finding:
    """Whether `domain`'s SPF authorises the relay `relay` (written at `key` in settings)."""
    addresses = _relay_addresses(relay, lookup)
    if addresses is None:
        return Finding(
            "SPF",
            "warn",
            f"cannot judge a local relay ({relay}): what matters is the address it sends out from",
            f"check that {domain}'s SPF record authorises the address your local relay sends from",
        )
    if not addresses:
        return Finding(
            "SPF",
            "fail",
            f"{key}.host {relay} has no A or AAAA record",
            f"set {key}.host to your relay's name or address",
        )
    refused = []
    for address in addresses:
        verdict = check_host(lookup, domain, address)
        if verdict.result != "pass":
            refused.append(f"{address}: {verdict.result} ({verdict.why})")
    if refused:
        return Finding(
            "SPF",
            "fail",
            f"{domain}'s SPF does not authorise the relay {relay}: " + "; ".join(refused),
            f"add the relay to the record at {domain}, e.g. "
            f"ip{ipaddress.ip_address(addresses[0]).version}:{addresses[0]}, "
            "or the include: your provider documents",
        )
    return Finding("SPF", "ok", f"{domain} authorises the relay {relay} ({', '.join(addresses)})")


def _relay_addresses(host: str, lookup: Lookup) -> list[str] | None:
    """The relay's addresses; None for a relay on this machine, whose outside address the
    doctor cannot see."""
    if host.lower() == _LOCAL_RELAY:
        return None
    try:
        found = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        found = lookup.addresses(host)
    if found and all(ipaddress.ip_address(address).is_loopback for address in found):
        return None
    return found


def check_dkim(settings: Settings, lookup: Lookup) -> Finding:
    dkim = settings.dkim
    if dkim is None:
        return Finding(
            "DKIM",
            "fail",
            "no [dkim] section: messages go out unsigned",
            "add [dkim] domain, selector and key_file, then run `mailer init`",
        )
    name = f"{dkim.selector}._domainkey.{dkim.domain}"
    try:
        key = load_key(settings.path(dkim.key_file), dkim.domain, dkim.selector, dkim.algorithm)
    except MailerError as error:
        return Finding("DKIM", "fail", str(error), "run `mailer init` or fix dkim.key_file")
    ours = public_record(key)
    publish = f'publish TXT at {name}: "{ours}"'
    records = [text for text in lookup.txt(name) if "p=" in text]
    if not records:
        return Finding("DKIM", "fail", f"no DKIM key published at {name}", publish)
    tags = parse_tags(records[0])
    published = tags.get("p", "")
    if not published:
        return Finding("DKIM", "fail", f"the key at {name} is revoked (empty p=)", publish)
    if published != parse_tags(ours)["p"] and not _same_rsa_key(published, key):
        return Finding(
            "DKIM",
            "fail",
            f"the key at {name} is not the public half of "
            f"{settings.path(dkim.key_file)}: receivers will fail every signature",
            publish,
        )
    if tags.get("t", "").lower().split(":").count("y"):
        return Finding(
            "DKIM",
            "warn",
            f"{name} matches our key but is in test mode (t=y): "
            "receivers treat signed mail as unsigned",
            f"remove t=y: {publish}",
        )
    return Finding("DKIM", "ok", f"{name} publishes the public half of our {dkim.algorithm} key")


def public_record(key: DkimKey) -> str:
    """The TXT record value that publishes `key`'s public half."""
    if key.algorithm == "rsa-sha256":
        private = serialization.load_pem_private_key(key.private_key, password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"
    seed = base64.b64decode(key.private_key)
    raw = (
        ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"


def _same_rsa_key(published: str, key: DkimKey) -> bool:
    """Some tools publish the bare PKCS#1 RSAPublicKey instead of SubjectPublicKeyInfo."""
    if key.algorithm != "rsa-sha256":
        return False
    try:
        der = base64.b64decode(published, validate=True)
        public = serialization.load_der_public_key(der)
    except (binascii.Error, ValueError):
        try:
            pem = (
                b"-----BEGIN RSA PUBLIC KEY-----\n"
                + published.encode()
                + (b"\n-----END RSA PUBLIC KEY-----\n")
            )
            public = serialization.load_pem_public_key(pem)
        except ValueError:
            return False
    private = serialization.load_pem_private_key(key.private_key, password=None)
    return (
        isinstance(public, rsa.RSAPublicKey)
        and isinstance(private, rsa.RSAPrivateKey)
        and (public.public_numbers() == private.public_key().public_numbers())
    )


def check_dmarc(settings: Settings, lookup: Lookup) -> Finding:
    domain = settings.sender.domain
    policy = find_policy(lookup, domain)
    start = f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"'
    if policy is None:
        return Finding(
            "DMARC",
            "fail",
            f"no DMARC policy covers {domain} (none at _dmarc.{domain} or a parent)",
            f"publish TXT at _dmarc.{domain}: {start}, "
            "then move to p=quarantine once the reports show your mail aligned",
        )
    where = f"_dmarc.{policy.found_at}: {policy.record}"
    effective = _effective_policy(policy, domain)
    if effective not in ("none", "quarantine", "reject"):
        return Finding(
            "DMARC",
            "fail",
            f"{where}: p= must be none, quarantine or reject",
            f"publish {start} at _dmarc.{policy.found_at}",
        )
    if effective == "none":
        return Finding(
            "DMARC",
            "warn",
            f"{where}: p=none only monitors; receivers may still deliver forgeries of your domain",
            "once the rua reports show all your mail aligned, move to p=quarantine, then p=reject",
        )
    return Finding("DMARC", "ok", where)


def _effective_policy(policy: DmarcPolicy, domain: str) -> str:
    """A subdomain under an organizational domain's record follows sp= when it is given."""
    if policy.found_at != domain.lower() and "sp" in policy.tags:
        return policy.tags["sp"].lower()
    return policy.policy


def check_alignment(settings: Settings, lookup: Lookup) -> Finding:
    from_domain, spf_domain = settings.sender.domain, envelope_domain(settings)
    policy = find_policy(lookup, from_domain) or DmarcPolicy(from_domain, "", {})
    dkim_domain = settings.dkim.domain if settings.dkim else None
    dkim_ok = dkim_domain is not None and aligned(lookup, policy, from_domain, dkim_domain, "adkim")
    spf_ok = aligned(lookup, policy, from_domain, spf_domain, "aspf")
    said = (
        f"From {from_domain}; DKIM d={dkim_domain or '(unsigned)'} "
        f"{'aligned' if dkim_ok else 'not aligned'}; envelope {spf_domain} "
        f"{'aligned' if spf_ok else 'not aligned'}"
    )
    strict = [tag for tag in ("adkim", "aspf") if policy.tags.get(tag, "r").lower() == "s"]
    mode = f" (strict: {', '.join(strict)})" if strict else ""
    if dkim_ok:
        return Finding("DMARC alignment", "ok", said + mode)
    fix = (
        f'set dkim.domain = "{from_domain}" (and publish its key), or relax the policy (adkim=r)'
        if strict
        else f'set dkim.domain = "{from_domain}" (or a subdomain) and publish its key'
    )
    if spf_ok:
        return Finding(
            "DMARC alignment",
            "warn",
            f"{said}{mode}: DMARC passes on SPF alone, which forwarding breaks",
            fix,
        )
    return Finding("DMARC alignment", "fail", f"{said}{mode}: DMARC fails for every message", fix)


def check_mx(settings: Settings, lookup: Lookup) -> Finding:
    domains = dict.fromkeys([settings.sender.domain, envelope_domain(settings)])
    found, missing = [], []
    for domain in domains:
        hosts = [host for _, host in lookup.mx(domain)]
        if hosts and all(hosts):
            found.append(f"{domain}: {', '.join(hosts)}")
        else:
            missing.append(f"{domain} ({'a null MX' if hosts else 'no MX'})")
    if missing:
        return Finding(
            "MX",
            "fail",
            f"mail to {', '.join(missing)} cannot be delivered: "
            "bounces and replies are lost, and receivers distrust senders that "
            "cannot receive",
            f"publish an MX record for {', '.join(domains)} pointing at a server that accepts mail",
        )
    return Finding("MX", "ok", "; ".join(found))


def check_tracking_host(settings: Settings, lookup: Lookup) -> Finding:
    url = settings.tracking.base_url
    host = urlsplit(url).hostname or ""
    try:
        local = ipaddress.ip_address(host).is_loopback
        addresses = [host]
    except ValueError:
        local = host.lower() == _LOCAL_RELAY
        addresses = [] if local else lookup.addresses(host)
    if local:
        return Finding(
            "tracking host",
            "warn",
            f"tracking.base_url {url} is this machine: "
            "links and one-click unsubscribe work only for a local trial",
            "set tracking.base_url to the public https:// URL of your proxy",
        )
    if not addresses:
        return Finding(
            "tracking host",
            "fail",
            f"{host} has no A or AAAA record: every link, "
            "open pixel and unsubscribe in your messages is dead",
            f"publish an A (and AAAA) record for {host} at your https proxy",
        )
    return Finding("tracking host", "ok", f"{host}: {', '.join(addresses)}")


def bulk_sender_checklist(settings: Settings, findings: list[Finding],
                          rates: Rates | None = None) -> list[Finding]:  # fmt: skip
    """Gmail's, Yahoo's and Microsoft's rules for bulk senders (5,000 a day and up), read off
    the findings above, the settings and the sender's recent rates (None: no database)."""
    auth = [
        finding
        for finding in findings
        if finding.name in ("SPF", "DKIM", "DMARC", "DMARC alignment")
    ]
    status = worst(auth)
    short = [f"{finding.name} {finding.status}" for finding in auth if finding.status != "ok"]
    authentication = Finding(
        "bulk senders: authentication",
        status,
        "SPF, DKIM and a DMARC policy with an aligned From are required"
        + (f"; not yet: {', '.join(short)}" if short else ": all in place"),
        "fix the findings above" if short else "",
    )
    return [authentication, _one_click(settings), _complaint_rate(rates)]


def _one_click(settings: Settings) -> Finding:
    url = urlsplit(settings.tracking.base_url)
    name = "bulk senders: one-click unsubscribe"
    if settings.dkim is None:
        return Finding(
            name,
            "fail",
            "List-Unsubscribe-Post counts only in a DKIM signature "
            "that covers it (RFC 8058 section 4), and messages go out unsigned",
            "add [dkim] and run `mailer init`",
        )
    if url.scheme != "https":  # settings allow plain http only on this machine
        return Finding(
            name,
            "warn",
            f"RFC 8058 needs an https List-Unsubscribe URL; tracking.base_url is "
            f"{settings.tracking.base_url}, fine for a local trial only",
            "set tracking.base_url to the public https:// URL of your proxy",
        )
    return Finding(
        name,
        "ok",
        "every campaign message carries List-Unsubscribe "
        f"<{settings.tracking.base_url}/u/...> and List-Unsubscribe-Post: "
        "List-Unsubscribe=One-Click, both DKIM-signed; `mailer serve` honours the "
        "POST at once",
    )


def _complaint_rate(rates: Rates | None) -> Finding:
    """The last RATE_PERIOD's rates from the database (complaints reach mailer through
    `mailer inbound`, `bounces ingest` or a provider's webhook), when there is one."""
    name = "bulk senders: complaint rate"
    watch = ("register the domain with Google Postmaster Tools, Yahoo's complaint feedback "
             "loop and Microsoft SNDS/JMRP, and send their reports to [inbound] fbl_address")
    if rates is None:
        return Finding(name, "warn", "not measured: no database to read (run `mailer init`); "
                       "Gmail requires under 0.3% (aim under 0.1%)", watch)  # fmt: skip
    status, said = rates.verdict()
    fix = {"ok": "", "warn": watch,
           "fail": "stop and find the cause: who was mailed without wanting it (old lists, "
                   "no double opt-in, too often); the circuit breakers pause campaigns"}
    return Finding(name, status, f"last {RATE_PERIOD.days} days: {said}", fix[status])


CHECKS: tuple[tuple[str, Check], ...] = (
    ("SPF", check_spf),
    ("DKIM", check_dkim),
    ("DMARC", check_dmarc),
    ("DMARC alignment", check_alignment),
    ("MX", check_mx),
    ("tracking host", check_tracking_host),
)


def diagnose(settings: Settings, lookup: Lookup, rates: Rates | None = None) -> list[Finding]:
    """Every check, then the checklist; a check whose DNS question got no answer fails."""
    findings = []
    for name, check in CHECKS:
        try:
            findings.append(check(settings, lookup))
        except LookupFailed as error:
            findings.append(
                Finding(
                    name,
                    "fail",
                    f"the DNS did not answer: {error}",
                    "check your resolver, or name one with --nameserver",
                )
            )
    return findings + bulk_sender_checklist(settings, findings, rates)
