"""idempotency_keys: work done once (store/once.py): the events API's Idempotency-Keys and the
tracking writer's batches, with the answers given

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import UTCDateTime

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A website that sent POST /events again because the answer was lost recorded its events
    # twice, and so did the tracking writer a batch whose COMMIT's answer was lost.
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("answered_at", UTCDateTime, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_idempotency_keys_answered_at", "idempotency_keys", ["answered_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_answered_at", "idempotency_keys")
    op.drop_table("idempotency_keys")
