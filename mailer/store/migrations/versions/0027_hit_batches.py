"""hit_batches: the tracking writer's committed batches, so that none is written twice

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
    # A batch whose COMMIT reached the database while the connection was cut looked failed to
    # the serving process, which sent it again: its opens and clicks were stored twice.
    op.create_table(
        "hit_batches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("written", sa.Integer, nullable=False),
        sa.Column("committed_at", UTCDateTime, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_hit_batches_committed_at", "hit_batches", ["committed_at"])


def downgrade() -> None:
    op.drop_index("ix_hit_batches_committed_at", "hit_batches")
    op.drop_table("hit_batches")
