"""retention: opens and clicks rolled up per message and day, website events per day and name

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id, UTCDateTime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Opens and clicks older than [retention] events_after (retention.py): per message, kind
    # and UTC day, so unique counts, the period (the message's queued_at) and the timeline of
    # `mailer report` stay what they were. No contact: the outbox row names them.
    op.create_table(
        "event_rollups",
        sa.Column("outbox_id", Id, primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD, UTC
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("last_at", UTCDateTime, nullable=False),  # the latest of them (consent expiry)
        sqlite_with_rowid=False,
    )
    # Website events older than [retention] website_events_after: how many per day and name.
    op.create_table(
        "website_rollups",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("events", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("website_rollups")
    op.drop_table("event_rollups")
