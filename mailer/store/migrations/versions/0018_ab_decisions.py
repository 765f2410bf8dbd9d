"""broadcast A/B tests: the winner decided after the test wait, and resends

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Json, UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A resend needs no table: its own outbox row (step "<step>.resend") is unique per contact.
    op.create_table(
        "ab_decisions",
        sa.Column("campaign", sa.String(100), primary_key=True),
        sa.Column("send_at", sa.String(64), primary_key=True),
        sa.Column("decide_by", sa.String(16), nullable=False),
        sa.Column("winner", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("numbers", Json, nullable=False),
        sa.Column("decided_at", UTCDateTime, nullable=False),
        sa.Column("rest_queued", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign", "send_at"],
            ["broadcast_runs.campaign", "broadcast_runs.send_at"],
            ondelete="CASCADE",
        ),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("ab_decisions")
