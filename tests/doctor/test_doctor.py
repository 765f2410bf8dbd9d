"""`mailer doctor` against a real authoritative DNS server on loopback, with a good zone and
zones broken one way each."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.config import Settings, load_settings
from mailer.doctor.checks import diagnose
from mailer.doctor.findings import Finding
from mailer.doctor.lookup import Lookup, resolver_for
from mailer.doctor.spf import check_host
from mailer.render.dkim import Algorithm, generate_key
from tests.doctor.zone_server import ZoneServer

SETTINGS = """
secret_key_file = ".mailer/secret.key"

[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[smtp]
host = "relay.example"

[tracking]
base_url = "https://t.acme.example"

[dkim]
domain = "acme.example"
selector = "s1"
algorithm = "{algorithm}"
key_file = "dkim.key"
"""

KEYS: dict[str, tuple[bytes, str]] = {}


def key_pair(algorithm: Algorithm, name: str = "ours") -> tuple[bytes, str]:
    """One key per algorithm and name for the whole run: RSA keys take a while to make."""
    if algorithm + name not in KEYS:
        KEYS[algorithm + name] = generate_key(algorithm)
    return KEYS[algorithm + name]


def txt(value: str) -> str:
    """A TXT record's value in zone syntax: strings of at most 255 bytes (RFC 1035 3.3.14)."""
    return " ".join(f'"{value[start : start + 255]}"' for start in range(0, len(value), 255))


def good_records(algorithm: Algorithm = "rsa-sha256") -> dict[str, str | None]:
    return {
        "spf": f"acme TXT {txt('v=spf1 mx include:_spf.relay.example -all')}",
        "relay spf": f"_spf.relay TXT {txt('v=spf1 ip4:192.0.2.0/28 ip4:192.0.2.16/28 -all')}",
        "relay": "relay A 192.0.2.25",
        "mx": "acme MX 10 mx.acme",
        "mx host": "mx.acme A 192.0.2.10",
        "dmarc": f"_dmarc.acme TXT {txt('v=DMARC1; p=quarantine; rua=mailto:d@acme.example')}",
        "dkim": f"s1._domainkey.acme TXT {txt(key_pair(algorithm)[1])}",
        "tracking": "t.acme A 192.0.2.80",
        "tracking v6": "t.acme AAAA 2001:db8::80",
    }


def zone_text(records: dict[str, str | None]) -> str:
    head = "@ 3600 SOA ns hostmaster 1 3600 600 86400 60\n@ 3600 NS ns\nns 3600 A 127.0.0.1\n"
    return head + "".join(f"{record}\n" for record in records.values() if record)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_project(tmp_path, "rsa-sha256")


def write_project(folder: Path, algorithm: Algorithm) -> Path:
    (folder / "settings.toml").write_text(textwrap.dedent(SETTINGS.format(algorithm=algorithm)))
    (folder / "dkim.key").write_bytes(key_pair(algorithm)[0])
    return folder / "settings.toml"


def run(config: Path, records: dict[str, str | None], **environ: str) -> dict[str, Finding]:
    settings: Settings = load_settings(config, environ=environ)
    with ZoneServer(zone_text(records)) as server:
        findings = diagnose(settings, Lookup(resolver_for(server.nameserver)))
    return {finding.name: finding for finding in findings}


def statuses(findings: dict[str, Finding]) -> dict[str, str]:
    return {name: finding.status for name, finding in findings.items()}


GOOD = {
    "SPF": "ok",
    "DKIM": "ok",
    "DMARC": "ok",
    "DMARC alignment": "ok",
    "MX": "ok",
    "tracking host": "ok",
    "bulk senders: authentication": "ok",
    "bulk senders: one-click unsubscribe": "ok",
    "bulk senders: complaint rate": "warn",
}


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_a_good_zone_passes_every_check(tmp_path: Path, algorithm: Algorithm) -> None:
    config = write_project(tmp_path, algorithm)
    findings = run(config, good_records(algorithm))
    assert statuses(findings) == GOOD
    assert "192.0.2.25" in findings["SPF"].detail
    assert "List-Unsubscribe-Post" in findings["bulk senders: one-click unsubscribe"].detail
    assert "not measured: no database" in findings["bulk senders: complaint rate"].detail


def broken(**changes: str | None) -> dict[str, str | None]:
    return good_records() | changes


def test_no_spf_record_fails_spf_and_the_checklist(config: Path) -> None:
    findings = run(config, broken(spf=None))
    assert findings["SPF"].status == "fail"
    assert "publishes no SPF record" in findings["SPF"].detail
    assert "v=spf1" in findings["SPF"].fix
    assert findings["bulk senders: authentication"].status == "fail"
    assert "SPF fail" in findings["bulk senders: authentication"].detail


def test_spf_that_does_not_authorise_the_relay_fails_with_the_term_to_add(config: Path) -> None:
    findings = run(config, broken(spf=f"acme TXT {txt('v=spf1 ip4:198.51.100.0/24 ~all')}"))
    assert findings["SPF"].status == "fail"
    assert "192.0.2.25: softfail" in findings["SPF"].detail
    assert "ip4:192.0.2.25" in findings["SPF"].fix


def test_spf_is_checked_for_every_relay_and_a_fallback_it_does_not_authorise_fails_by_name(
    config: Path,
) -> None:
    records = good_records() | {"backup": "backup.acme A 198.51.100.7",
                              "third": "third.acme A 192.0.2.26"}  # fmt: skip
    environ = {"MAILER_SMTP__FALLBACKS__BACKUP__HOST": "backup.acme.example",
               "MAILER_SMTP__FALLBACKS__THIRD__HOST": "third.acme.example"}  # fmt: skip
    findings = run(config, records, **environ)
    spf = findings["SPF"]
    assert spf.status == "fail"
    assert "relay primary: acme.example authorises the relay relay.example" in spf.detail
    assert ("relay backup: acme.example's SPF does not authorise the relay backup.acme.example: "
            "198.51.100.7: fail") in spf.detail  # fmt: skip
    assert "relay third: acme.example authorises the relay third.acme.example" in spf.detail
    assert spf.fix.startswith("relay backup: add the relay to the record at acme.example, e.g. "
                              "ip4:198.51.100.7")  # fmt: skip
    assert findings["bulk senders: authentication"].status == "fail"

    findings = run(config, records, MAILER_SMTP__FALLBACKS__THIRD__HOST="third.acme.example")
    assert findings["SPF"].status == "ok"
    assert findings["SPF"].detail.startswith("relay primary: acme.example authorises")
    assert findings["SPF"].detail.endswith("192.0.2.26): v=spf1 mx include:_spf.relay.example -all")


def test_a_dkim_key_that_is_not_ours_fails_and_the_fix_is_our_record(config: Path) -> None:
    theirs = key_pair("rsa-sha256", "theirs")[1]
    findings = run(config, broken(dkim=f"s1._domainkey.acme TXT {txt(theirs)}"))
    assert findings["DKIM"].status == "fail"
    assert "not the public half" in findings["DKIM"].detail
    assert key_pair("rsa-sha256")[1] in findings["DKIM"].fix


def test_no_dkim_record_fails(config: Path) -> None:
    findings = run(config, broken(dkim=None))
    assert findings["DKIM"].status == "fail"
    assert "no DKIM key published at s1._domainkey.acme.example" in findings["DKIM"].detail


def test_no_dmarc_policy_fails(config: Path) -> None:
    findings = run(config, broken(dmarc=None))
    assert findings["DMARC"].status == "fail"
    assert "_dmarc.acme.example" in findings["DMARC"].fix
    assert findings["bulk senders: authentication"].status == "fail"


def test_dmarc_p_none_warns(config: Path) -> None:
    findings = run(config, broken(dmarc=f"_dmarc.acme TXT {txt('v=DMARC1; p=none')}"))
    assert findings["DMARC"].status == "warn"
    assert "p=quarantine" in findings["DMARC"].fix
    assert findings["bulk senders: authentication"].status == "warn"


def test_a_subdomain_sender_finds_the_organizational_policy(config: Path) -> None:
    records = broken(
        mx="news.acme MX 10 mx.acme",
        spf=f"news.acme TXT {txt('v=spf1 include:_spf.relay.example -all')}",
    )
    findings = run(config, records, MAILER_SENDER__EMAIL="hi@news.acme.example")
    assert findings["DMARC"].status == "ok"
    assert "_dmarc.acme.example" in findings["DMARC"].detail
    assert findings["DMARC alignment"].status == "ok"  # relaxed: d=acme.example aligns


def test_strict_alignment_with_a_subdomain_dkim_domain_and_envelope_fails(config: Path) -> None:
    strict = "v=DMARC1; p=reject; adkim=s; aspf=s"
    records = broken(
        dmarc=f"_dmarc.acme TXT {txt(strict)}",
        dkim=f"s1._domainkey.mail.acme TXT {txt(key_pair('rsa-sha256')[1])}",
        spf=f"bounce.acme TXT {txt('v=spf1 include:_spf.relay.example -all')}",
        mx="acme MX 10 mx.acme\nbounce.acme MX 10 mx.acme",
    )
    environ = {
        "MAILER_DKIM__DOMAIN": "mail.acme.example",
        "MAILER_SENDER__BOUNCE_DOMAIN": "bounce.acme.example",
    }
    findings = run(config, records, **environ)
    assert findings["DKIM"].status == "ok"
    assert findings["SPF"].status == "ok"
    assert findings["DMARC alignment"].status == "fail"
    assert "DKIM d=mail.acme.example not aligned" in findings["DMARC alignment"].detail
    assert "strict" in findings["DMARC alignment"].detail
    relaxed = run(
        config, records | {"dmarc": f"_dmarc.acme TXT {txt('v=DMARC1; p=reject')}"}, **environ
    )
    assert relaxed["DMARC alignment"].status == "ok"


def test_a_dkim_domain_of_another_organization_is_misaligned(config: Path) -> None:
    records = broken(dkim=f"s1._domainkey.other TXT {txt(key_pair('rsa-sha256')[1])}")
    findings = run(config, records, MAILER_DKIM__DOMAIN="other.example")
    assert findings["DKIM"].status == "ok"
    assert findings["DMARC alignment"].status == "warn"  # SPF alone aligns: forwarding breaks it
    assert 'dkim.domain = "acme.example"' in findings["DMARC alignment"].fix


def test_no_mx_fails(config: Path) -> None:
    findings = run(config, broken(mx=None))
    assert findings["MX"].status == "fail"
    assert "acme.example (no MX)" in findings["MX"].detail


def test_a_null_mx_fails(config: Path) -> None:
    findings = run(config, broken(mx="acme MX 0 ."))
    assert findings["MX"].status == "fail"
    assert "a null MX" in findings["MX"].detail


def test_a_tracking_host_without_an_address_fails(config: Path) -> None:
    findings = run(config, broken(tracking=None, **{"tracking v6": None}))
    assert findings["tracking host"].status == "fail"
    assert "t.acme.example has no A or AAAA record" in findings["tracking host"].detail


def test_a_local_relay_and_plain_http_tracking_warn(config: Path) -> None:
    environ = {
        "MAILER_SMTP__HOST": "127.0.0.1",
        "MAILER_TRACKING__BASE_URL": "http://127.0.0.1:8025",
    }
    findings = run(config, good_records(), **environ)
    assert findings["SPF"].status == "warn"
    assert "cannot judge a local relay" in findings["SPF"].detail
    assert findings["tracking host"].status == "warn"
    assert findings["bulk senders: one-click unsubscribe"].status == "warn"


@pytest.fixture
def spf_zone() -> Iterator[Lookup]:
    records = {
        "a": f"a TXT {txt('v=spf1 a/24 -all')}",
        "a host": "a A 203.0.113.7",
        "redirect": f"r TXT {txt('v=spf1 redirect=a.example')}",
        "mx": f"m TXT {txt('v=spf1 mx:a.example ~all')}",
        "mx host": "a MX 10 a",
        "v6": f"six TXT {txt('v=spf1 ip6:2001:db8::/32 -all')}",
        "two": f"two TXT {txt('v=spf1 -all')}\ntwo TXT {txt('v=spf1 +all')}",
        "loop": f"loop TXT {txt('v=spf1 include:loop.example -all')}",
        "many": f"many TXT {txt(' '.join(['v=spf1'] + ['a'] * 11 + ['-all']))}",
        "many host": "many A 198.51.100.1",
        "macro": f"macro TXT {txt('v=spf1 exists:%{i}.x.example -all')}",
    }
    with ZoneServer(zone_text(records)) as server:
        yield Lookup(resolver_for(server.nameserver))


@pytest.mark.parametrize(
    ("domain", "ip", "result"),
    [
        ("a.example", "203.0.113.200", "pass"),  # a/24
        ("a.example", "198.51.100.1", "fail"),
        ("r.example", "203.0.113.9", "pass"),  # redirect= to a.example
        ("m.example", "203.0.113.7", "pass"),
        ("m.example", "203.0.113.8", "softfail"),  # mx without a prefix: the host itself
        ("six.example", "2001:db8::1", "pass"),
        ("six.example", "192.0.2.1", "fail"),
        ("two.example", "192.0.2.1", "permerror"),  # two SPF records
        ("loop.example", "192.0.2.1", "permerror"),  # an include loop hits the lookup limit
        ("many.example", "198.51.100.2", "permerror"),  # eleven a terms, none matching
        ("macro.example", "192.0.2.1", "permerror"),  # not expanded here: said, not guessed
        ("nothing.example", "192.0.2.1", "none"),
    ],
)
def test_spf_evaluation(spf_zone: Lookup, domain: str, ip: str, result: str) -> None:
    assert check_host(spf_zone, domain, ip).result == result


def test_cli_json_lists_every_finding_and_exits_1_on_a_fail(config: Path) -> None:
    with ZoneServer(zone_text(broken(mx=None))) as server:
        result = CliRunner().invoke(
            cli, ["--config", str(config), "doctor", "--json", "--nameserver", server.nameserver]
        )
    assert result.exit_code == 1, result.output
    found = {item["name"]: item for item in json.loads(result.stdout)}
    assert {name: item["status"] for name, item in found.items()} == GOOD | {"MX": "fail"}
    assert set(found["MX"]) == {"name", "status", "detail", "fix"}


def test_cli_table_exits_0_when_nothing_fails(config: Path) -> None:
    with ZoneServer(zone_text(good_records())) as server:
        result = CliRunner().invoke(
            cli, ["--config", str(config), "doctor", "--nameserver", server.nameserver]
        )
    assert result.exit_code == 0, result.output
    assert "complaint rate" in result.stdout and "fail" not in result.stdout


def test_cli_refuses_a_nameserver_that_is_not_an_address(config: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--config", str(config), "doctor", "--nameserver", "dns.example:53"]
    )
    assert result.exit_code == 1
    assert "--nameserver dns.example:53" in result.stderr
