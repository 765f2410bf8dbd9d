"""outgoing webhooks: the durable queue of deliveries to subscribed URLs

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id, Json, UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", Id, primary_key=True),
        sa.Column("subscription", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", UTCDateTime),
    )
    op.create_index(
        "ix_webhook_outbox_status_next_attempt_at", "webhook_outbox", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_webhook_outbox_subscription_status", "webhook_outbox", ["subscription", "status"]
    )


def downgrade() -> None:
    op.drop_table("webhook_outbox")
