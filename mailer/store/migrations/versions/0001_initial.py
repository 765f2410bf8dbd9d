"""contacts, lists, tags, consent ledger and its evidence, consent status, suppressions

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.tables import WITHOUT_ROWID, Id, Json, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", Id, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("first_name", sa.String(200)),
        sa.Column("last_name", sa.String(200)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("locale", sa.String(16)),
        sa.Column("attributes", Json, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "lists",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("double_opt_in", sa.Boolean, nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column("list_id", Id, sa.ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("joined_at", UTCDateTime, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        **WITHOUT_ROWID,
    )
    op.create_index("ix_memberships_contact_id", "memberships", ["contact_id"])
    op.create_table(
        "contact_tags",
        sa.Column(
            "contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("tag", sa.String(100), primary_key=True),
        **WITHOUT_ROWID,
    )
    op.create_index("ix_contact_tags_tag", "contact_tags", ["tag"])
    op.create_table(
        "consent_entries",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("contact_id", Id, sa.ForeignKey("contacts.id", ondelete="SET NULL")),
        sa.Column("subject_hash", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("evidence_digest", sa.String(64)),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_consent_entries_contact_id", "consent_entries", ["contact_id"])
    op.create_index("ix_consent_entries_subject_hash", "consent_entries", ["subject_hash"])
    op.create_table(
        "consent_evidence",
        sa.Column("entry_id", Id, sa.ForeignKey("consent_entries.id"), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    ledger_head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(ledger_head, [{"id": 1, "last_id": 0, "last_hash": GENESIS_HASH}])
    op.create_table(
        "consent_status",
        sa.Column(
            "contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("purpose", sa.String(100), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("since", UTCDateTime, nullable=False),
        sa.Column("entry_id", Id, sa.ForeignKey("consent_entries.id"), nullable=False),
        **WITHOUT_ROWID,
    )
    op.create_table(
        "suppressions",
        sa.Column("address_hash", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("entry_id", Id, sa.ForeignKey("consent_entries.id")),
    )


def downgrade() -> None:
    for table in (
        "suppressions", "consent_status", "ledger_head", "consent_evidence", "consent_entries",
        "contact_tags", "memberships", "lists", "contacts",
    ):  # fmt: skip
        op.drop_table(table)
