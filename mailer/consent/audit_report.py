"""The compliance report of a period, as JSON-ready data: `mailer audit report` prints it, as
text, JSON or one HTML file, and every form shows the same numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from mailer.consent import checkpoints, verification
from mailer.consent.as_of import consents_at
from mailer.consent.audit import (
    Period,
    consents_by_list,
    erasures,
    ledger_entries,
    sends_summary,
    withdrawals,
)
from mailer.returns.rates import period_rates


def compliance_report(
    connection: Connection,
    period: Period,
    lists_of: Mapping[str, str],
    now: datetime,
    secret: bytes,
    kept: Sequence[Path] = (),
) -> dict[str, Any]:
    """The report of `period`; `kept` are checkpoint files the auditor holds (`consent
    checkpoint`): each is checked as `consent verify --checkpoint` does, the latest is shown."""
    checked = verification.verify_ledger(connection, secret, list(kept))
    found = withdrawals(connection, period)
    return {
        "generated_at": now.isoformat(),
        "period": period.as_dict(),
        "ledger": checked.as_dict() | {"checkpoint": _latest(kept, checked.checkpoints)},
        "sends": sends_summary(connection, period, lists_of),
        "consents_at": period.until.isoformat() if period.until else None,  # None: now
        "consents": (consents_at(connection, period.until) if period.until
                     else consents_by_list(connection)),
        "ledger_entries": ledger_entries(connection, period),
        "withdrawals": [each.as_dict() for each in found],
        "withdrawals_with_messages_after": sum(1 for each in found if each.messages_after),
        "erasures": erasures(connection, period),
        "deliverability": period_rates(connection, period).as_dict(),
    }


def _latest(kept: Sequence[Path], problems: Mapping[str, str | None]) -> dict[str, Any] | None:
    """The newest checkpoint among `kept` (by its signed time) and what its check found."""
    if not kept:
        return None
    path, newest = max(((path, checkpoints.load(path)) for path in kept), key=lambda p: p[1].at)
    return {"file": str(path), "entries": newest.entries, "head": newest.head,
            "at": newest.at.isoformat(), "problem": problems.get(str(path))}  # fmt: skip
