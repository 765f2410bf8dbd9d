"""events: website events and engagement with messages, for segments and conditions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id, Json, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("step", sa.String(100)),
        sa.Column("properties", Json, nullable=False),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_events_contact_id_kind_name_occurred_at",
        "events",
        ["contact_id", "kind", "name", "occurred_at"],
    )


def downgrade() -> None:
    op.drop_table("events")
