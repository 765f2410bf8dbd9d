"""enrollments.waiting_since: when a postponed step was first due, so the frequency cap lets
the message that has waited longest go first

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Enrollments postponed under an earlier version start counting their wait now (NULL reads
    # as their due_at): none of them is lost, their order among themselves is by due time.
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("waiting_since", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("waiting_since")
