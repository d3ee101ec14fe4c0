"""RFC 7591 client metadata, dynamic registration and back-channel logout

- clients: client_uri, logo_uri, policy_uri, tos_uri, contacts (RFC 7591 §2), the hash of a
  registration access token (RFC 7592), backchannel_logout_uri and
  backchannel_logout_session_required (OpenID Connect Back-Channel Logout 1.0 §2.2);
- initial_access_tokens: what opens the registration endpoint (hashes only);
- backchannel_logouts: logout tokens waiting for delivery, with retries and backoff.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)
CLIENT_COLUMNS = [
    sa.Column("client_uri", sa.Text(), nullable=True),
    sa.Column("logo_uri", sa.Text(), nullable=True),
    sa.Column("policy_uri", sa.Text(), nullable=True),
    sa.Column("tos_uri", sa.Text(), nullable=True),
    sa.Column("contacts", sa.JSON(), nullable=True),
    sa.Column("registration_access_token_hash", sa.String(128), nullable=True),
    sa.Column("backchannel_logout_uri", sa.Text(), nullable=True),
    sa.Column(
        "backchannel_logout_session_required",
        sa.Boolean(),
        nullable=False,
        server_default=sa.false(),
    ),
]


def upgrade() -> None:
    for column in CLIENT_COLUMNS:
        op.add_column("clients", column)
    op.create_table(
        "initial_access_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "backchannel_logouts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "client_id",
            sa.String(128),
            sa.ForeignKey("clients.client_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("logout_token", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("next_attempt_at", UTC_TIME, nullable=True, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("sent_at", UTC_TIME, nullable=True),
        sa.Column("last_error", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("backchannel_logouts")
    op.drop_table("initial_access_tokens")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never a batch rebuild (see 0002).
    for column in reversed(CLIENT_COLUMNS):
        op.execute(f"ALTER TABLE clients DROP COLUMN {column.name}")
