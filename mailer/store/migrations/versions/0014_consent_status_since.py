"""consent_status (purpose, since) index: the consent expiry of each tick reads only the
statuses older than a list's expires_after

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_consent_status_purpose_since", "consent_status", ["purpose", "since"])


def downgrade() -> None:
    op.drop_index("ix_consent_status_purpose_since", "consent_status")
