"""events: a click's link as a computed column, and a message's clicks indexed on their own

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import CLICKED_LINK, CLICKS_ONLY

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The pixel writer asks, for every open, which links the message's clicks around it hold:
    # read from this index alone, not from each click's row and its JSON (issue 16). Opens do
    # not enter it. PostgreSQL computes only stored columns; SQLite adds only virtual ones.
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.add_column("events", sa.Column("link", sa.Integer,
                                      sa.Computed(CLICKED_LINK, persisted=postgresql)))  # fmt: skip
    op.create_index("ix_events_clicks", "events", ["outbox_id", "occurred_at", "kind", "link"],
                    **CLICKS_ONLY)  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_events_clicks", "events")
    op.drop_column("events", "link")
