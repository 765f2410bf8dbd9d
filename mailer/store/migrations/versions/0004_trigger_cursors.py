"""trigger cursors: how far each sequence's trigger has been read

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_cursors",
        sa.Column("campaign", sa.String(100), primary_key=True),
        sa.Column("seen_until", UTCDateTime, nullable=False),
    )
    op.create_index("ix_memberships_list_id_joined_at", "memberships", ["list_id", "joined_at"])
    op.create_index("ix_events_kind_name_occurred_at", "events", ["kind", "name", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_events_kind_name_occurred_at", "events")
    op.drop_index("ix_memberships_list_id_joined_at", "memberships")
    op.drop_table("trigger_cursors")
