"""broadcast_runs: a broadcast's done-state keyed by what was sent (campaign and send_at)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The old done-mark (a trigger_cursors row under the broadcast's name) is left unread: a
    # broadcast already queued keeps its outbox rows at cycle 0, which its first run reuses.
    op.create_table(
        "broadcast_runs",
        sa.Column("campaign", sa.String(100), primary_key=True),
        sa.Column("send_at", sa.String(64), primary_key=True),
        sa.Column("cycle", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.UniqueConstraint("campaign", "cycle"),
    )


def downgrade() -> None:
    op.drop_table("broadcast_runs")
