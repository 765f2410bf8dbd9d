"""The lead score: points for opens, clicks and website events, halving every `half_life`.

Stored scaled to a fixed epoch, so time passing changes no row: the score at time t is
`score_epoch / 2 ** ((t - EPOCH) / half_life)`. Adding points at time t adds
`points * 2 ** ((t - EPOCH) / half_life)`; a segment `score > 50` compares score_epoch with
`50 * 2 ** ((now - EPOCH) / half_life)`, a constant, so it stays one indexed-able comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, bindparam, update

from mailer.store.tables import contacts

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def growth(moment: datetime, half_life: timedelta) -> float:
    """2 ** ((moment - EPOCH) / half_life): what a point at `moment` weighs at the epoch."""
    return float(2 ** ((moment - EPOCH) / half_life))


def score_at(score_epoch: float, moment: datetime, half_life: timedelta) -> float:
    return score_epoch / growth(moment, half_life)


def add_points(connection: Connection, contact_id: int, points: float, at: datetime,
               half_life: timedelta) -> None:  # fmt: skip
    add_points_many(connection, {contact_id: points}, at, half_life)


def add_points_many(connection: Connection, points: Mapping[int, float], at: datetime,
                    half_life: timedelta) -> None:  # fmt: skip
    """Add points to many contacts in one statement (executed once per contact, in id order:
    two transactions scoring the same contacts lock them in the same order, never a deadlock)."""
    weight = growth(at, half_life)
    rows = [{"row_id": contact_id, "added": earned * weight}
            for contact_id, earned in sorted(points.items()) if earned]  # fmt: skip
    if rows:
        connection.execute(
            update(contacts).where(contacts.c.id == bindparam("row_id"))
            .values(score_epoch=contacts.c.score_epoch + bindparam("added")), rows
        )  # fmt: skip
