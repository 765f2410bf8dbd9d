"""broadcast_zones: each zone of a broadcast run queued (or found stale) once; what a run sends

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Json, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Runs begun before this revision have neither: their settings are taken as they are at
    # the next tick, and their zones already queued are re-queued only to who was not queued.
    with op.batch_alter_table("broadcast_runs") as table:
        table.add_column(sa.Column("seen_until", UTCDateTime))
        table.add_column(sa.Column("sends", Json))
    op.create_table(
        "broadcast_zones",
        sa.Column("campaign", sa.String(100), primary_key=True),
        sa.Column("send_at", sa.String(64), primary_key=True),
        sa.Column("zone", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_at", UTCDateTime, nullable=False),
        sa.Column("messages", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign", "send_at"],
            ["broadcast_runs.campaign", "broadcast_runs.send_at"],
            ondelete="CASCADE",
        ),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("broadcast_zones")
    with op.batch_alter_table("broadcast_runs") as table:
        table.drop_column("sends")
        table.drop_column("seen_until")
