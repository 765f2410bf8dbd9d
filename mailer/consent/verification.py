"""`mailer consent verify` as one library call: the keyed chain and its sealed head, the tables
derived from the ledger, and the checkpoints an auditor kept elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from mailer.consent import checkpoints
from mailer.consent.ledger import Verification, verify
from mailer.consent.ledger_key import key_of
from mailer.consent.replay import projection_findings


@dataclass(frozen=True)
class LedgerReport:
    chain: Verification
    findings: list[str] = field(default_factory=list)  # every derived row that disagrees
    checkpoints: dict[str, str | None] = field(default_factory=dict)  # file -> problem

    @property
    def problems(self) -> list[str]:
        broken = [self.chain.problem] if self.chain.problem else []
        kept = [f"{name}: {problem}" for name, problem in self.checkpoints.items() if problem]
        return [*broken, *self.findings, *kept]

    @property
    def intact(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "entries": self.chain.entries,
            "head_hash": self.chain.head_hash,
            "keyed_from": self.chain.keyed_from,
            "problem": self.chain.problem,
            "findings": self.findings,
            "checkpoints": [
                {"file": name, "problem": problem} for name, problem in self.checkpoints.items()
            ],
            "problems": self.problems,
        }


def verify_ledger(connection: Connection, secret: bytes, kept: list[Path]) -> LedgerReport:
    """Everything `verify` proves, every finding named (not only the first)."""
    chain = verify(connection)
    findings = projection_findings(connection, secret)
    public_key = key_of(connection).signing.public_key()
    problems = {
        str(path): checkpoints.problem(connection, public_key, checkpoints.load(path))
        for path in kept
    }
    return LedgerReport(chain, findings, problems)
