"""event triggers follow recording order: an event id cursor, indexed per event name

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A cursor left by an earlier version has no ids: its next tick reads the trigger's events
    # from the first, within the lateness bound; what already enrolled does not enroll again.
    with op.batch_alter_table("trigger_cursors") as batch:
        batch.add_column(sa.Column("events_to", Id))
        batch.add_column(sa.Column("events_from", Id))
    op.create_index("ix_events_kind_name_id", "events", ["kind", "name", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_kind_name_id", "events")
    with op.batch_alter_table("trigger_cursors") as batch:
        batch.drop_column("events_from")
        batch.drop_column("events_to")
