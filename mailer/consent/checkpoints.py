"""Signed checkpoints of the consent ledger: (entry count, head hash, time), signed with ed25519.

An auditor keeps checkpoints outside the database. A later `mailer consent verify --checkpoint`
proves the ledger still holds every checkpointed entry unchanged: a truncation or a rollback to
an older copy of the database (whose own head seal is genuine) shows as a shorter ledger, a
rewrite as a different hash at the checkpointed entry. The signature makes a checkpoint that
was edited (to excuse a truncation) useless; it is checked with the public key alone.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, func, select

from mailer.consent.ledger import Verification, verify
from mailer.consent.ledger_key import LedgerKey, key_of
from mailer.errors import MailerError
from mailer.store.tables import consent_entries

FORMAT = "mailer-consent-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    entries: int
    head: str
    at: datetime
    public_key: str  # base64 of the raw ed25519 key that signed it
    signature: str  # base64 of the signature over `signed_text`

    def signed_text(self) -> bytes:
        statement = {"format": FORMAT, "entries": self.entries, "head": self.head,
                     "at": self.at.isoformat()}  # fmt: skip
        return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "entries": self.entries, "head": self.head,
                "at": self.at.isoformat(), "public_key": self.public_key,
                "signature": self.signature}  # fmt: skip


def sign(key: LedgerKey, verified: Verification, at: datetime) -> Checkpoint:
    """A checkpoint of a ledger that was just verified intact (never of a broken one: the
    checkpoint would vouch for the break)."""
    if not verified.intact:
        raise MailerError(f"no checkpoint of a broken ledger: {verified.problem}")
    unsigned = Checkpoint(verified.entries, verified.head_hash, at, key.public_text, "")
    signature = key.signing.sign(unsigned.signed_text())
    return Checkpoint(unsigned.entries, unsigned.head, at, key.public_text,
                      base64.b64encode(signature).decode())  # fmt: skip


def write(checkpoint: Checkpoint, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(checkpoint.as_dict(), indent=2) + "\n")


def load(path: Path) -> Checkpoint:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f'"format" is not "{FORMAT}"')
        return Checkpoint(int(data["entries"]), str(data["head"]),
                          datetime.fromisoformat(data["at"]), str(data["public_key"]),
                          str(data["signature"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise MailerError(f"{path}: not a ledger checkpoint ({error})") from None


def problem(connection: Connection, key: Ed25519PublicKey, checkpoint: Checkpoint) -> str | None:
    """Why the ledger does not hold `checkpoint` unchanged, or None when it does. Run after the
    chain itself verified, so the entry at the checkpoint's count pins every entry before it."""
    where = f"the checkpoint of {checkpoint.at:%Y-%m-%d %H:%M %Z}".rstrip()
    try:
        key.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_text())
    except (InvalidSignature, ValueError):
        return f"{where} does not carry a valid signature of this ledger's key: it was forged"
    remaining = connection.scalar(select(func.count()).select_from(consent_entries)) or 0
    if remaining < checkpoint.entries:
        return (f"{where} records {checkpoint.entries} entries, only {remaining} remain: the "
                "ledger was truncated or rolled back to an older copy")  # fmt: skip
    found = connection.scalar(
        select(consent_entries.c.entry_hash).where(consent_entries.c.id == checkpoint.entries)
    )
    if checkpoint.entries and found != checkpoint.head:
        return (f"entry {checkpoint.entries} differs from {where}: the ledger was rewritten at "
                "or before that entry")  # fmt: skip
    return None


def write_daily(connection: Connection, folder: Path, now: datetime) -> Path | None:
    """Today's checkpoint in `folder` (checkpoint-YYYY-MM-DD.json, UTC date), unless written
    already; the daemon calls it every hour, so a day missed while it was down is still kept."""
    path = folder / f"checkpoint-{now:%Y-%m-%d}.json"
    if path.exists():
        return None
    write(sign(key_of(connection), verify(connection), now), path)
    return path
