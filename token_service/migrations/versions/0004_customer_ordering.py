"""customers.entitlements_version: orders the token endpoint's writes after permission changes

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "customers",
        sa.Column("entitlements_version", sa.BigInteger(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    # A plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never a batch rebuild: on SQLite a
    # rebuild drops the customers table, and the foreign keys' ON DELETE CASCADE would empty
    # every table that refers to it.
    op.execute("ALTER TABLE customers DROP COLUMN entitlements_version")
