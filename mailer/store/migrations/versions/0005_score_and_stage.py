"""contacts: lead score (epoch-scaled, decaying) and lifecycle stage

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("contacts", sa.Column("score_epoch", sa.Float, nullable=False,
                                        server_default="0"))  # fmt: skip
    op.add_column("contacts", sa.Column("stage", sa.String(32)))
    op.create_index("ix_contacts_updated_at", "contacts", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_contacts_updated_at", "contacts")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("stage")
        batch.drop_column("score_epoch")
