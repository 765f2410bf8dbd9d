"""enrollments in sequences, and the outbox of queued messages

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _contact() -> sa.Column[int]:
    return sa.Column(
        "contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "enrollments",
        sa.Column("id", Id, primary_key=True),
        sa.Column("campaign", sa.String(100), nullable=False),
        _contact(),
        sa.Column("cycle", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("entered_at", UTCDateTime, nullable=False),
        sa.Column("last_step", sa.String(100)),
        sa.Column("last_position", sa.Integer, nullable=False),
        sa.Column("last_step_at", UTCDateTime),
        sa.Column("due_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("reason", sa.Text),
        sa.UniqueConstraint("campaign", "contact_id", "cycle"),
    )
    op.create_index("ix_enrollments_status_due_at", "enrollments", ["status", "due_at"])
    op.create_index("ix_enrollments_contact_id", "enrollments", ["contact_id"])
    op.create_table(
        "outbox",
        sa.Column("id", Id, primary_key=True),
        sa.Column("campaign", sa.String(100), nullable=False),
        sa.Column("step", sa.String(100), nullable=False),
        _contact(),
        sa.Column("cycle", sa.Integer, nullable=False),
        sa.Column("enrollment_id", Id, sa.ForeignKey("enrollments.id", ondelete="SET NULL")),
        sa.Column("variant", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("consent_entry_id", Id, sa.ForeignKey("consent_entries.id")),
        sa.Column("queued_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("campaign", "step", "contact_id", "cycle"),
    )
    op.create_index("ix_outbox_status_queued_at", "outbox", ["status", "queued_at"])
    op.create_index("ix_outbox_contact_id", "outbox", ["contact_id"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("enrollments")
