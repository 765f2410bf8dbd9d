"""events: the event triggers' index (kind, name, id) holds website events only

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03
"""

from alembic import op

from mailer.store.tables import WEBSITE_ONLY

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only the event triggers read it, and only for website events: every open and click the
    # tracking writer stores no longer pays for an entry in it (issue 16). On a big database
    # this rebuilds the index (minutes for tens of millions of events; writes wait meanwhile).
    op.drop_index("ix_events_kind_name_id", "events")
    op.create_index("ix_events_kind_name_id", "events", ["kind", "name", "id"], **WEBSITE_ONLY)


def downgrade() -> None:
    op.drop_index("ix_events_kind_name_id", "events")
    op.create_index("ix_events_kind_name_id", "events", ["kind", "name", "id"])
