"""form_posts: sign-up form posts answered and not yet recorded, so that a serving process that
dies between its answer and the record loses none

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id, Json, UTCDateTime

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "form_posts",
        sa.Column("id", Id, primary_key=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("lead", Json, nullable=False),
        sa.Column("evidence", Json, nullable=False),
    )
    op.create_index("ix_form_posts_received_at", "form_posts", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_form_posts_received_at", "form_posts")
    op.drop_table("form_posts")
