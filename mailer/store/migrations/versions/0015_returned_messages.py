"""returned_messages: each bounce, complaint or mailto unsubscribe acted on, once; an outbox
sent_at index for the circuit breakers' window

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id, UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "returned_messages",
        sa.Column("id", Id, primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("recipient_hash", sa.String(64)),
        sa.Column("status_code", sa.String(16)),
        sa.Column("feedback_type", sa.String(64)),
        sa.Column("outbox_id", Id, sa.ForeignKey("outbox.id", ondelete="SET NULL")),
        sa.Column("campaign", sa.String(100)),
        sa.Column("action", sa.Text, nullable=False),
        sa.UniqueConstraint("digest"),
    )
    op.create_index(
        "ix_returned_messages_received_at_classification",
        "returned_messages",
        ["received_at", "classification"],
    )
    op.create_index(
        "ix_returned_messages_recipient_hash_received_at",
        "returned_messages",
        ["recipient_hash", "received_at"],
    )
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_sent_at", "outbox")
    op.drop_table("returned_messages")
