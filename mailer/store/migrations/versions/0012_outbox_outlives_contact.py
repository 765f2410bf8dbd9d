"""outbox.contact_id: nullable, SET NULL on delete, so erasing a person keeps their sent
messages (pseudonymised, with the ledger entry that allowed each) instead of deleting them

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from alembic import op

from mailer.store.tables import Id

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

FOREIGN_KEY = "fk_outbox_contact_id_contacts"


def _contact_key(nullable: bool, ondelete: str) -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(FOREIGN_KEY, type_="foreignkey")
        batch.alter_column("contact_id", existing_type=Id, nullable=nullable)
        batch.create_foreign_key(FOREIGN_KEY, "contacts", ["contact_id"], ["id"],
                                 ondelete=ondelete)  # fmt: skip


def upgrade() -> None:
    _contact_key(nullable=True, ondelete="SET NULL")


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE contact_id IS NULL")  # erased people's messages
    _contact_key(nullable=False, ondelete="CASCADE")
