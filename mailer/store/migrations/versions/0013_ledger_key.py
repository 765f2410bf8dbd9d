"""ledger_head.keyed_from and head_mac: the consent ledger is chained under a key that is not in
the database, and its head is sealed with it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_head") as batch:
        batch.add_column(sa.Column("keyed_from", sa.BigInteger))
        batch.add_column(sa.Column("head_mac", sa.String(64)))
    # An empty ledger is keyed from its first entry. One with entries stays unkeyed (NULL) until
    # `mailer init` checks it and seals it (or the next append keys what follows).
    op.execute("UPDATE ledger_head SET keyed_from = 1 WHERE last_id = 0")


def downgrade() -> None:
    with op.batch_alter_table("ledger_head") as batch:
        batch.drop_column("head_mac")
        batch.drop_column("keyed_from")
