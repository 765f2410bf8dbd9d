"""request_keys: the events API's Idempotency-Keys and the answers given

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import UTCDateTime

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A website that sent POST /events again because the answer was lost recorded its events
    # twice; with an Idempotency-Key it now gets the first answer back.
    op.create_table(
        "request_keys",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("answered_at", UTCDateTime, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_request_keys_answered_at", "request_keys", ["answered_at"])


def downgrade() -> None:
    op.drop_index("ix_request_keys_answered_at", "request_keys")
    op.drop_table("request_keys")
