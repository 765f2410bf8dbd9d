"""outbox: delivery state (send_after, attempts, lease, reply, links); campaign pauses

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("send_after", UTCDateTime))
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_owner", sa.String(64)))
        batch.add_column(sa.Column("sent_at", UTCDateTime))
        batch.add_column(sa.Column("message_id", sa.String(255)))
        batch.add_column(sa.Column("reply", sa.Text))
        batch.add_column(sa.Column("links", sa.Text))
    op.execute("UPDATE outbox SET send_after = queued_at WHERE status = 'queued'")
    op.create_index("ix_outbox_status_send_after", "outbox", ["status", "send_after"])
    op.create_table(
        "campaign_pauses",
        sa.Column("campaign", sa.String(100), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("paused_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("campaign_pauses")
    op.drop_index("ix_outbox_status_send_after", "outbox")
    with op.batch_alter_table("outbox") as batch:
        for column in ("links", "reply", "message_id", "sent_at", "lease_owner", "attempts",
                       "send_after"):  # fmt: skip
            batch.drop_column(column)
