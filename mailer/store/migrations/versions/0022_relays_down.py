"""relays down shared by every process; which relay carried each message

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import UTCDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per relay (host and port) found down (delivery/relay_board.py): every `mailer
    # run` reads it at each batch claim, so a relay one process found down is skipped by all.
    op.create_table(
        "relays_down",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("port", sa.Integer, primary_key=True),
        sa.Column("since", UTCDateTime, nullable=False),
        sa.Column("probe_at", UTCDateTime, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sqlite_with_rowid=False,
    )
    # The relay that gave the outbox row's reply, by name: NULL for rows written before.
    op.add_column("outbox", sa.Column("relay", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as outbox:
        outbox.drop_column("relay")
    op.drop_table("relays_down")
