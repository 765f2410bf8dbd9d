"""returned_rollups: bounces, complaints and the other returned messages rolled up by
retention, per UTC day, classification and message, so that returned_messages stops growing

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "returned_rollups",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("classification", sa.String(16), primary_key=True),
        sa.Column("outbox_id", Id, primary_key=True),
        sa.Column("events", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("returned_rollups")
