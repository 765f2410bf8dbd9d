"""limits that hold across processes: token buckets in the database

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One token bucket a row (store/limits.py): sending rates, the form's per-IP limit, the
    # confirmation email's resend memory. A row whose bucket is full again is deleted.
    op.create_table(
        "shared_limits",
        sa.Column("bucket", sa.String(200), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("refilled_at", sa.Float, nullable=False),  # epoch seconds
        sa.Column("granted", sa.Integer, nullable=False),  # what the last take got
        sa.Column("full_at", sa.Float, nullable=False),  # epoch seconds: full again, deletable
        sqlite_with_rowid=False,
    )
    op.create_index("ix_shared_limits_full_at", "shared_limits", ["full_at"])


def downgrade() -> None:
    op.drop_index("ix_shared_limits_full_at", "shared_limits")
    op.drop_table("shared_limits")
