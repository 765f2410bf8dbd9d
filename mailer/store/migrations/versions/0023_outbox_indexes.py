"""outbox indexes: (status, queued_at) dropped, sent_at of sent rows only, message_id indexed

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""

from alembic import op

from mailer.store.tables import only_where

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every row the tick queues wrote an entry in each (issue 16: 50,000 at once). Claims read
    # (status, send_after) since 0006, which serves every query by status as well.
    op.drop_index("ix_outbox_status_queued_at", "outbox")
    # Only sent rows: a queued or sending row has no sent_at, and every query of the index
    # (breakers, returns, retention, audits) bounds sent_at, which implies IS NOT NULL.
    op.drop_index("ix_outbox_sent_at", "outbox")
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"], **only_where("sent_at IS NOT NULL"))
    # A returned message or ESP webhook event matched by our Message-ID read the whole outbox.
    op.create_index("ix_outbox_message_id", "outbox", ["message_id"],
                    **only_where("message_id IS NOT NULL"))  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_outbox_message_id", "outbox")
    op.drop_index("ix_outbox_sent_at", "outbox")
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])
    op.create_index("ix_outbox_status_queued_at", "outbox", ["status", "queued_at"])
