"""shared_limits: the rate and burst a bucket refills at, and until when a stricter one holds

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

COLUMNS = ("rate", "burst", "strict_until")


def upgrade() -> None:
    # Processes that disagree on a limit (two daemons, two [delivery] rates) no longer mix
    # their arithmetic: the lowest rate asserted lately holds (store/limits.py). Rows written
    # before have none: the next take fills them in.
    with op.batch_alter_table("shared_limits") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("shared_limits") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
