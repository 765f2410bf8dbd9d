"""DKIM signatures checked by dkimpy's own verifier against the TXT record generate_key made."""

from __future__ import annotations

import base64
import email.policy
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from mailer.errors import MailerError
from mailer.render import dkim as dkim_sign
from mailer.render.dkim import Algorithm, DkimKey, generate_key, load_key, sign

DOMAIN = "acme-coffee.example"
SELECTOR = "mail2026"
ALGORITHMS: tuple[Algorithm, ...] = ("rsa-sha256", "ed25519-sha256")

# A 512-bit RSA key: too short for DKIM (cryptography refuses to generate one, so it is kept here).
SHORT_RSA_PEM = b"""-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA5KusNWWulM/cIZlM
diymFdKFf33qzrC754jECIxjQzu433bKMNIvmozV5mO/HpafqC/x91teBwoiRrGY
3sjagQIDAQABAkB6IqdsLc89dHgjCfoo9FgRN8xN+Dc+Bm+WjxoFZtZtxanWl7EE
XgCkVkE64S9qNQr4C8Xpet11ihIGaAh1mwABAiEA8uygP7GXjD+G4CLEfaMs/FPw
9MCZI7kNiHiFy3Y16IECIQDw+qM7kd7zBprZs5LG4kQCTubcwyRaTipqWiosJkny
AQIhAN3hq+0BdP6w96y5lOd8p5ZBxZCIalfqqqXAD9TrQAoBAiAaNpl1DGwdMZW8
or0Pp2NQgPa6Avw8Wo5gnUhDHzMiAQIhALQKKI0Yzbt28XWx9KIiNsWRMy0W5cvV
bpffGYKP8hoc
-----END PRIVATE KEY-----
"""


def welcome_message() -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Acme Coffee <news@acme-coffee.example>"
    msg["To"] = "Zoë Rossi <zoe.rossi@example.net>"
    msg["Subject"] = "Benvenuta, Zoë ☕"
    msg["Date"] = format_datetime(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    msg["Message-ID"] = "<20261123100000.42.welcome@acme-coffee.example>"
    msg["List-Unsubscribe"] = (
        "<https://t.example/u/abc>, <mailto:unsubscribe+abc@acme-coffee.example>"
    )
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(
        "Ciao Zoë,\n\nyour first espresso is on us.\n\nAcme Coffee, Via Roma 1, Milano\n"
    )
    msg.add_alternative(
        "<html><body><p>Ciao Zoë,</p><p>your first <b>espresso</b> is on us.</p>"
        "<p>Acme Coffee, Via Roma 1, Milano</p></body></html>\n",
        subtype="html",
    )
    return msg.as_bytes()


@pytest.fixture(scope="module", params=ALGORITHMS)
def generated(request: pytest.FixtureRequest) -> tuple[DkimKey, str]:
    algorithm: Algorithm = request.param
    private_key, record = generate_key(algorithm)
    return DkimKey(DOMAIN, SELECTOR, algorithm, private_key), record


def dns_with(record: str) -> Callable[..., bytes]:
    """dkimpy's dnsfunc: it asks for b'<selector>._domainkey.<domain>.' and takes the TXT bytes."""

    def txt(name: bytes, timeout: int = 5) -> bytes:
        return (
            record.encode("ascii") if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else b""
        )

    return txt


def verifies(message: bytes, record: str) -> bool:
    return bool(dkim.verify(message, dnsfunc=dns_with(record)))


def signature_tags(message: bytes) -> dict[bytes, bytes]:
    match = re.match(rb"DKIM-Signature:(.*?)\r\n(?![ \t])", message, re.DOTALL)
    assert match, "the DKIM-Signature header is not first"
    return dict(dkim.util.parse_tag_value(match.group(1)))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signed_message_verifies_against_the_generated_dns_record(algorithm: Algorithm) -> None:
    private_key, record = generate_key(algorithm)
    key = DkimKey(DOMAIN, SELECTOR, algorithm, private_key)

    message = welcome_message()

    signed = sign(message, key)

    assert verifies(signed, record)
    assert signature_tags(signed)[b"a"] == algorithm.encode()
    assert signed.endswith(message)


def test_signature_covers_the_identity_and_one_click_unsubscribe_headers(
    generated: tuple[DkimKey, str],
) -> None:
    key, _ = generated
    tags = signature_tags(sign(welcome_message(), key))

    signed = [name.strip().lower() for name in tags[b"h"].split(b":")]
    for name in (b"from", b"to", b"subject", b"date", b"message-id",
                 b"list-unsubscribe", b"list-unsubscribe-post"):  # fmt: skip
        assert name in signed
    assert tags[b"d"] == DOMAIN.encode()
    assert tags[b"s"] == SELECTOR.encode()


def test_headers_the_message_lacks_are_not_listed(generated: tuple[DkimKey, str]) -> None:
    key, _ = generated
    tags = signature_tags(sign(welcome_message(), key))

    signed = [name.strip().lower() for name in tags[b"h"].split(b":")]
    assert not {b"reply-to", b"list-id", b"feedback-id"} & set(signed)


def test_canonicalisation_is_relaxed_for_headers_and_body(generated: tuple[DkimKey, str]) -> None:
    key, record = generated
    signed = sign(welcome_message(), key)

    assert signature_tags(signed)[b"c"] == b"relaxed/relaxed"
    # relaxed: a relay that re-spaces a header keeps the signature valid
    respaced = signed.replace(b"List-Unsubscribe-Post: List", b"List-Unsubscribe-Post:   List")
    assert respaced != signed
    assert verifies(respaced, record)


def test_changing_the_unsubscribe_link_after_signing_breaks_the_signature(
    generated: tuple[DkimKey, str],
) -> None:
    key, record = generated
    signed = sign(welcome_message(), key)

    tampered = signed.replace(b"<https://t.example/u/abc>", b"<https://evil.example/u/abc>")

    assert tampered != signed
    assert not verifies(tampered, record)


def test_changing_the_body_after_signing_breaks_the_signature(
    generated: tuple[DkimKey, str],
) -> None:
    key, record = generated
    signed = sign(welcome_message(), key)

    tampered = signed.replace(b"espresso", b"decaf", 1)

    assert tampered != signed
    assert not verifies(tampered, record)


def test_a_message_without_from_cannot_be_signed(generated: tuple[DkimKey, str]) -> None:
    key, _ = generated
    message = re.sub(rb"^From: .*?\r\n", b"", welcome_message(), flags=re.MULTILINE)

    with pytest.raises(MailerError, match=f"{SELECTOR}._domainkey.{DOMAIN}.*From"):
        sign(message, key)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_load_key_reads_back_a_generated_key_file(tmp_path: Path, algorithm: Algorithm) -> None:
    private_key, record = generate_key(algorithm)
    path = tmp_path / f"{SELECTOR}.key"
    path.write_bytes(private_key)

    key = load_key(path, DOMAIN, SELECTOR, algorithm)

    assert key == DkimKey(DOMAIN, SELECTOR, algorithm, private_key)
    assert verifies(sign(welcome_message(), key), record)


def test_load_key_accepts_pkcs8_rsa_with_crlf_line_endings(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "pkcs8.pem"
    path.write_bytes(pkcs8.replace(b"\n", b"\r\n"))

    key = load_key(path, DOMAIN, SELECTOR, "rsa-sha256")

    assert key.private_key.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")


def test_load_key_accepts_an_openssl_pem_ed25519_key(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "ed25519.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    record = "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode()

    key = load_key(path, DOMAIN, SELECTOR, "ed25519-sha256")

    assert verifies(sign(welcome_message(), key), record)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_load_key_names_a_missing_file(tmp_path: Path, algorithm: Algorithm) -> None:
    path = tmp_path / "absent.key"

    with pytest.raises(MailerError, match=re.escape(str(path)) + ": no such DKIM private key"):
        load_key(path, DOMAIN, SELECTOR, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_load_key_names_a_file_of_garbage(tmp_path: Path, algorithm: Algorithm) -> None:
    path = tmp_path / "garbage.key"
    path.write_bytes(b"this is not a key\n\x00\xff")

    with pytest.raises(MailerError, match=re.escape(str(path)) + ": not a"):
        load_key(path, DOMAIN, SELECTOR, algorithm)


def test_load_key_refuses_a_key_of_the_other_algorithm(tmp_path: Path) -> None:
    rsa_pem, _ = generate_key("rsa-sha256")
    ed_seed, _ = generate_key("ed25519-sha256")
    (tmp_path / "rsa.key").write_bytes(rsa_pem)
    (tmp_path / "ed.key").write_bytes(ed_seed)

    with pytest.raises(MailerError, match=r"rsa\.key: the key is RSA, not Ed25519"):
        load_key(tmp_path / "rsa.key", DOMAIN, SELECTOR, "ed25519-sha256")
    with pytest.raises(MailerError, match=r"ed\.key: not a PEM private key"):
        load_key(tmp_path / "ed.key", DOMAIN, SELECTOR, "rsa-sha256")


def test_load_key_refuses_rsa_keys_under_1024_bits(tmp_path: Path) -> None:
    path = tmp_path / "short.key"
    path.write_bytes(SHORT_RSA_PEM)

    with pytest.raises(MailerError, match=r"short\.key: the RSA key has 512 bits.*1024"):
        load_key(path, DOMAIN, SELECTOR, "rsa-sha256")


def test_load_key_refuses_an_encrypted_key(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "locked.key"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"hunter2"),
        )
    )

    with pytest.raises(MailerError, match=r"locked\.key: the private key is encrypted"):
        load_key(path, DOMAIN, SELECTOR, "rsa-sha256")


@given(st.lists(st.sampled_from([b"a", b"b", b" ", b"\t", b"  ", b"\r\n", b"."]), max_size=60))
def test_relaxed_body_canonicalisation_agrees_with_dkimpy(parts: list[bytes]) -> None:
    body = b"".join(parts)
    assert dkim_sign._relaxed_body(body, b"\r\n") == Relaxed.canonicalize_body(body)


@given(st.lists(st.sampled_from([b"a", b"B", b" ", b"\t", b"  ", b"\r\n ", b"\r\n\t", b":"]),
                max_size=30))  # fmt: skip
def test_relaxed_header_canonicalisation_agrees_with_dkimpy(parts: list[bytes]) -> None:
    value = b"".join(parts)
    [(name, expected)] = Relaxed.canonicalize_headers([(b"Subject ", value)])
    assert dkim_sign._relaxed_header(b"Subject ", value) == name + b":" + expected.rstrip(b"\r\n")


ED25519_SEED = base64.b64encode(b"mailer-test-ed25519-seed-32bytes")
FIELD_PIECES = ["a", "B", "é", "—", " ", "  ", "\t", "\r\n ", "\r\n\t", ":", ";", '"', "<", "="]


@given(st.lists(st.lists(st.sampled_from(FIELD_PIECES), max_size=20), min_size=1, max_size=14),
       st.lists(st.sampled_from(["a", " ", "\t", "\r\n", "é", "."]), max_size=200))  # fmt: skip
def test_signing_from_the_fields_is_signing_the_bytes(values: list[list[str]],
                                                      body: list[str]) -> None:  # fmt: skip
    """sign_fields (the header fields as render.mime wrote them) and sign (the same fields
    read back out of the bytes) write the same signature, whatever the values hold."""
    key = DkimKey(DOMAIN, SELECTOR, "ed25519-sha256", ED25519_SEED)
    names = ["From", "To", "Subject", "Reply-To", "X-Other", "from"]
    fields = [(names[number % len(names)], "".join(pieces))
              for number, pieces in enumerate(values)]  # fmt: skip
    fields[0] = ("From", fields[0][1])
    head = "\r\n".join(f"{name}: {value}" for name, value in fields)
    message = (head + "\r\n\r\n" + "".join(body)).encode("utf-8")
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert dkim_sign.sign_fields(message, fields, key, now) == sign(message, key, now)


def test_signing_from_the_fields_without_from_fails_alike() -> None:
    key = DkimKey(DOMAIN, SELECTOR, "ed25519-sha256", ED25519_SEED)
    message = b"To: a@example.com\r\n\r\nbody\r\n"
    with pytest.raises(MailerError, match="no From header"):
        dkim_sign.sign_fields(message, [("To", "a@example.com")], key)
    with pytest.raises(MailerError, match="no From header"):
        sign(message, key)
