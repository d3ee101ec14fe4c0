"""clients.allowed_origins: the origins a client's browser apps may call the API from (CORS)

NULL (every existing client): the origins of its redirect URIs.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("clients", sa.Column("allowed_origins", sa.JSON(), nullable=True))


def downgrade() -> None:
    # A plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never a batch rebuild (see 0002).
    op.execute("ALTER TABLE clients DROP COLUMN allowed_origins")
