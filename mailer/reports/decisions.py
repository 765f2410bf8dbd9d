"""The broadcast A/B auto-winner's decisions (table `ab_decisions`, written by
campaigns/ab_tests.py) as the report shows them: one per broadcast run, with the numbers that
decided it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from mailer.consent.audit import Period
from mailer.store.tables import ab_decisions


def decisions(connection: Connection, campaigns: Sequence[str],
              period: Period) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """campaign -> its decisions taken within `period`, oldest first. The rest of the list is
    queued when the decision is taken, so a period holds the decision with the messages it
    queued."""
    query = (
        select(ab_decisions)
        .where(ab_decisions.c.campaign.in_(campaigns), *period.holds(ab_decisions.c.decided_at))
        .order_by(ab_decisions.c.campaign, ab_decisions.c.decided_at)
    )  # fmt: skip
    found: dict[str, list[dict[str, Any]]] = {}
    for row in connection.execute(query):
        found.setdefault(row.campaign, []).append({
            "send_at": row.send_at, "decide_by": row.decide_by, "winner": row.winner,
            "reason": row.reason, "numbers": row.numbers,
            "decided_at": row.decided_at.isoformat(), "rest_queued": row.rest_queued,
        })  # fmt: skip
    return found


def winner_first(decision: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(variant, successes, trials): the winner's, then the others' in their order."""
    numbers = decision["numbers"]
    order = [decision["winner"], *(v for v in numbers if v != decision["winner"])]
    return [(v, numbers[v]["successes"], numbers[v]["trials"]) for v in order if v in numbers]


def run_time(send_at: str) -> str:
    """A run's key as people write it: `2026-11-24T09:00Z` (a local-time run as it is)."""
    try:
        moment = datetime.fromisoformat(send_at)
    except ValueError:
        return send_at
    if moment.utcoffset() is None or moment.utcoffset() or moment.second:
        return send_at
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def summary(campaign: str, decision: dict[str, Any]) -> str:
    """`spring (2026-11-24T09:00Z): winner B by clicks — <reason>; B 31/400, A 18/400`"""
    numbers = ", ".join(f"{v} {successes}/{trials}" for v, successes, trials in
                        winner_first(decision))  # fmt: skip
    return (f"{campaign} ({run_time(decision['send_at'])}): winner {decision['winner']} by "
            f"{decision['decide_by']} — {decision['reason']}; {numbers}")  # fmt: skip
