"""What one check of the doctor concluded."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    name: str
    status: Status
    detail: str
    fix: str = ""  # empty when there is nothing to do

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def worst(findings: list[Finding]) -> Status:
    statuses = {finding.status for finding in findings}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"
