"""website_contact_rollups: website events rolled up by retention, per contact, name and UTC
day, so that segments and goals still count them

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id, UTCDateTime

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # website_rollups counts per day and name only: after [retention] website_events_after,
    # `event "purchased" count >= 2` no longer found the buyers whose events were rolled up.
    op.create_table(
        "website_contact_rollups",
        sa.Column(
            "contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("last_at", UTCDateTime, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("website_contact_rollups")
