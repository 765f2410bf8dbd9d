"""The keys that make the consent ledger tamper-evident, and how a database connection gets them.

Both are derived from the secret key (never stored in the database): an HMAC key that chains
the entries and seals the ledger head, so rewriting history needs the key; and an ed25519 key
that signs checkpoints, so an auditor can check a checkpoint with the public key alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Connection, Engine

from mailer.errors import MailerError

_OPTION = "mailer_ledger_key"  # the engine execution option that carries the key


@dataclass(frozen=True)
class LedgerKey:
    secret: bytes  # the workspace's secret key

    @cached_property
    def chain(self) -> bytes:
        return _derive(self.secret, b"mailer consent ledger chain v1")

    @cached_property
    def signing(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(
            _derive(self.secret, b"mailer consent ledger checkpoints v1")
        )

    @property
    def public_text(self) -> str:
        """The checkpoint public key as base64 of its 32 raw bytes: what `init` prints."""
        return public_text(self.signing.public_key())

    def head_mac(self, last_id: int, last_hash: str, keyed_from: int) -> str:
        """The seal of the ledger head: moving the head back, or unkeying entries, breaks it."""
        message = f"{last_id}:{last_hash}:{keyed_from}".encode()
        return hmac.new(self.chain, message, hashlib.sha256).hexdigest()


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def public_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def bind(engine: Engine, secret: Callable[[], bytes]) -> None:
    """Give every connection of `engine` the ledger key, read from `secret` when first needed
    (so commands that never touch the ledger do not need the secret key)."""
    engine.update_execution_options(**{_OPTION: _Lazy(secret)})


def key_of(connection: Connection) -> LedgerKey:
    lazy: _Lazy | None = connection.get_execution_options().get(_OPTION)
    if lazy is None:
        raise MailerError(
            "this database connection has no ledger key: open it through a "
            "Workspace, which binds the key derived from the secret key"
        )
    return lazy.get()


class _Lazy:
    def __init__(self, secret: Callable[[], bytes]) -> None:
        self._secret = secret
        self._key: LedgerKey | None = None

    def get(self) -> LedgerKey:
        if self._key is None:
            self._key = LedgerKey(self._secret())
        return self._key
