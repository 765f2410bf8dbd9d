"""DKIM signing: the sending domain vouches for each message with a signature that receivers
check against a public key published in DNS, so mail from the domain can be told from forgeries.

List-Unsubscribe and List-Unsubscribe-Post are among the signed headers: RFC 8058 section 4
requires the signature to cover both, or receivers ignore the one-click unsubscribe.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type information
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from mailer.errors import MailerError

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

SIGNED_HEADERS: tuple[str, ...] = (
    "From", "To", "Subject", "Date", "Message-ID", "Reply-To",
    "List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Feedback-ID",
    "MIME-Version", "Content-Type",
)  # fmt: skip
_SIGNED_LOWER = tuple(name.lower().encode("ascii") for name in SIGNED_HEADERS)

MIN_RSA_BITS = 1024  # RFC 8301 section 3.2: verifiers must not accept shorter keys
NEW_RSA_BITS = 2048


@dataclass(frozen=True)
class DkimKey:
    """A private key ready for `sign`, published at `<selector>._domainkey.<domain>`.

    `private_key` is in the form dkimpy's signer takes: a PKCS#1 PEM for rsa-sha256, the
    base64 of the 32-byte seed for ed25519-sha256 (RFC 8463).
    """

    domain: str
    selector: str
    algorithm: Algorithm
    private_key: bytes


def load_key(path: Path, domain: str, selector: str, algorithm: Algorithm) -> DkimKey:
    """Read and check the private key in `path` (read once: callers keep the `DkimKey`; the
    delivery hot path must not reload it per message).

    rsa-sha256 takes any unencrypted PEM RSA key of at least 1024 bits; ed25519-sha256 takes
    the base64 seed that `generate_key` and dkimpy's `dknewkey` write, or an unencrypted PEM
    Ed25519 key (`openssl genpkey -algorithm ed25519`).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MailerError(
            f"{path}: no such DKIM private key file; create one with "
            f"mailer.render.dkim.generate_key({algorithm!r}) and publish its TXT record "
            f"at {selector}._domainkey.{domain}"
        ) from None
    except OSError as exc:
        raise MailerError(
            f"{path}: cannot read the DKIM private key ({exc.strerror}); "
            "check that the file is readable by the user running mailer"
        ) from None
    try:
        private_key = _rsa_pem(data) if algorithm == "rsa-sha256" else _ed25519_seed(data)
    except ValueError as exc:
        raise MailerError(f"{path}: {exc}") from None
    return DkimKey(domain, selector, algorithm, private_key)


def _load_pem(data: bytes) -> PrivateKeyTypes:
    """The private key in PEM `data`; ValueError saying why not."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying "encrypted, and no password given"
        raise ValueError(
            "the private key is encrypted; DKIM keys must be stored unencrypted "
            "(protect the file with permissions instead)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(
            "not a PEM private key (expected '-----BEGIN ... PRIVATE KEY-----')"
        ) from None


def _kind(key: PrivateKeyTypes) -> str:
    return type(key).__name__.removesuffix("PrivateKey")


def _rsa_pem(data: bytes) -> bytes:
    """Any PEM RSA private key, re-written as the PKCS#1 PEM that dkimpy parses."""
    key = _load_pem(data)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(
            f"the key is {_kind(key)}, not RSA; "
            "use algorithm ed25519-sha256 for Ed25519 keys, or an RSA key for rsa-sha256"
        )
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(
            f"the RSA key has {key.key_size} bits; receivers reject DKIM keys under "
            f"{MIN_RSA_BITS} bits (RFC 8301), generate a {NEW_RSA_BITS}-bit key"
        )
    return _rsa_pem_of(key)


def _ed25519_seed(data: bytes) -> bytes:
    """The base64 32-byte seed dkimpy signs with, from a base64 seed file or a PEM key."""
    if data.lstrip().startswith(b"-----BEGIN"):
        key = _load_pem(data)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(
                f"the key is {_kind(key)}, not Ed25519; use algorithm rsa-sha256 for RSA keys"
            )
        return base64.b64encode(_raw_seed(key))
    try:
        seed = base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        raise ValueError(
            "not an Ed25519 private key: expected the base64 of a 32-byte seed "
            "(as written by generate_key('ed25519-sha256') or dkimpy's dknewkey) or a PEM key"
        )
    return base64.b64encode(seed)


def _raw_seed(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def generate_key(algorithm: Algorithm) -> tuple[bytes, str]:
    """A new private key, in the file format `load_key` reads, and the TXT record value to
    publish at `<selector>._domainkey.<domain>`.

    An RSA-2048 record is longer than one 255-byte DNS string: zone files split it into
    several quoted strings, which receivers join.
    """
    if algorithm == "rsa-sha256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=NEW_RSA_BITS)
        public_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        record = f"v=DKIM1; k=rsa; p={base64.b64encode(public_der).decode('ascii')}"
        return _rsa_pem_of(key), record
    signer = ed25519.Ed25519PrivateKey.generate()
    public_raw = signer.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    record = f"v=DKIM1; k=ed25519; p={base64.b64encode(public_raw).decode('ascii')}"
    return base64.b64encode(_raw_seed(signer)), record


def _rsa_pem_of(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def sign(message: bytes, key: DkimKey) -> bytes:
    """`message` with a DKIM-Signature header prepended (relaxed/relaxed), covering those of
    SIGNED_HEADERS that the message has."""
    linesep = b"\r\n" if b"\r\n" in message else b"\n"  # keep the message's own line endings
    try:
        signer = dkim.DKIM(
            message, signature_algorithm=key.algorithm.encode("ascii"), linesep=linesep
        )
        present = {name.lower() for name, _ in signer.headers}
        header: bytes = signer.sign(
            key.selector.encode("ascii"),
            key.domain.encode("ascii"),
            key.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[name for name in _SIGNED_LOWER if name in present],
        )
    except (dkim.DKIMException, UnicodeEncodeError) as exc:
        raise MailerError(
            f"cannot DKIM-sign as {key.selector}._domainkey.{key.domain} ({key.algorithm}): {exc}"
        ) from None
    return header + message
