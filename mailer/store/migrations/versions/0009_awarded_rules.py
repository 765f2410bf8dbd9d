"""score rules awarded once: a row per (contact, rule), whatever ticks run at the same time

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "awarded_rules",
        sa.Column(
            "contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("awarded_at", UTCDateTime, nullable=False),
    )
    # Awards an earlier version recorded as events ("rule: orders >= 3"), once each even where
    # two overlapping ticks recorded them twice.
    op.execute(
        "INSERT INTO awarded_rules (contact_id, rule, awarded_at) "
        "SELECT contact_id, substr(name, 7), min(occurred_at) FROM events "
        "WHERE kind = 'rule' AND name LIKE 'rule: %' GROUP BY contact_id, name"
    )


def downgrade() -> None:
    op.drop_table("awarded_rules")
