"""counting people honestly: what cross-batch machine rules and refetch de-duplication need

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import Id

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The message an open or click was of: reports count per variant and per message, and
    # the machine rules look at the message's earlier hits, without guessing from the step.
    op.add_column("events", sa.Column("outbox_id", Id))
    # The tracking rules read a message's stored hits in a time range around the batch, and
    # its last open before it: both walk only that range of the index.
    op.create_index("ix_events_outbox_id_occurred_at", "events", ["outbox_id", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_events_outbox_id_occurred_at", "events")
    op.drop_column("events", "outbox_id")
