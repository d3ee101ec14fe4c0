"""invitations.declined_at: an existing customer joins a company only by accepting

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invitations", sa.Column("declined_at", sa.DateTime(timezone=True)))
    # Data: before 0005 an invitation assigned its invitee at once, and a company withdrew an
    # unaccepted one by unassigning the invitee; from 0005 nothing is assigned before the
    # invitee accepts, so such a link would assign them again. Those withdrawn invitations go.
    op.execute(
        "DELETE FROM invitations WHERE accepted_at IS NULL AND token_hash IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM assignments a"
        " WHERE a.customer_id = invitations.customer_id"
        " AND a.legal_entity_id = invitations.legal_entity_id)"
    )


def downgrade() -> None:
    # A plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never a batch rebuild (see 0004).
    op.execute("ALTER TABLE invitations DROP COLUMN declined_at")
