"""The compliance report of a period, as JSON-ready data: `mailer audit report` prints it, as
text, JSON or one HTML file, and every form shows the same numbers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from mailer.consent import ledger
from mailer.consent.audit import (
    Period,
    consents_by_list,
    erasures,
    ledger_entries,
    sends_summary,
    withdrawals,
)


def compliance_report(
    connection: Connection, period: Period, lists_of: Mapping[str, str], now: datetime
) -> dict[str, Any]:
    verification = ledger.verify(connection)
    found = withdrawals(connection, period)
    return {
        "generated_at": now.isoformat(),
        "period": period.as_dict(),
        "ledger": {
            "intact": verification.intact,
            "entries": verification.entries,
            "head_hash": verification.head_hash,
            "problem": verification.problem,
            "checkpoint": None,
        },
        "sends": sends_summary(connection, period, lists_of),
        "consents": consents_by_list(connection),
        "ledger_entries": ledger_entries(connection, period),
        "withdrawals": [each.as_dict() for each in found],
        "withdrawals_with_messages_after": sum(1 for each in found if each.messages_after),
        "erasures": erasures(connection, period),
        # Bounce and complaint rates against Gmail's and Yahoo's thresholds come with the
        # bounces work; until then the report says they are not measured.
        "deliverability": None,
    }
