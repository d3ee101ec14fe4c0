"""company self-service: invited customers, invitations, the notification outbox

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_STATUS = "status IN ('active', 'blocked')"
NEW_STATUS = "status IN ('active', 'blocked', 'invited')"
MANAGE_OWN = "customer.customer_manage_own"


def _set_status_check(old: str, new: str) -> None:
    if op.get_context().dialect.name == "sqlite":
        # SQLite cannot alter a CHECK constraint, and rebuilding `customers` (Alembic's batch
        # mode) would DROP it, which cascades into every table that references it. The SQLite
        # manual's own procedure for constraint-only changes (ALTER TABLE, section 7) edits the
        # stored definition instead: the table's data and format are untouched.
        bind = op.get_bind()
        sql = bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'customers'"
        ).scalar_one()
        if old not in sql:
            raise RuntimeError("customers: unexpected status constraint")
        version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
        bind.exec_driver_sql("PRAGMA writable_schema = ON")
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'customers'",
            (sql.replace(old, new),),
        )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    else:
        op.drop_constraint(op.f("ck_customers_status"), "customers", type_="check")
        op.create_check_constraint(op.f("ck_customers_status"), "customers", new)


def upgrade() -> None:
    _set_status_check(OLD_STATUS, NEW_STATUS)
    op.create_table(
        "invitations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("legal_entity_id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("invited_by", sa.String(length=64), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_invitations_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"],
            ["customers.id"],
            name=op.f("fk_invitations_invited_by_customers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["legal_entity_id"],
            ["legal_entities.id"],
            name=op.f("fk_invitations_legal_entity_id_legal_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("legal_entity_id", "email", name="uq_invitations_entity_email"),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitations_token_hash")),
    )
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invitations_customer_id"), ["customer_id"])
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_sent_at"), ["sent_at"])
    op.add_column("audit_events", sa.Column("legal_entity_id", sa.String(length=64)))
    op.create_index(
        op.f("ix_audit_events_legal_entity_id"), "audit_events", ["legal_entity_id"]
    )
    # Data: the scope that lets a company's admins invite, in the catalogue and in every
    # predefined ADMIN group that already manages members (the default ADMIN bundle).
    bind = op.get_bind()
    if bind.execute(
        sa.text("SELECT 1 FROM scopes WHERE name = :name"), {"name": MANAGE_OWN}
    ).first() is None and bind.execute(sa.text("SELECT 1 FROM scopes")).first() is not None:
        bind.execute(
            sa.text(
                "INSERT INTO scopes (name, description, predefined) VALUES (:name, '', :yes)"
            ),
            {"name": MANAGE_OWN, "yes": True},
        )
        bind.execute(
            sa.text(
                "INSERT INTO group_scopes (group_id, scope) SELECT g.id, :name"
                " FROM customer_groups g JOIN group_scopes s ON s.group_id = g.id"
                " WHERE g.code = 'ADMIN' AND g.predefined = :yes"
                " AND s.scope = 'iam.assignment_create_own'"
            ),
            {"name": MANAGE_OWN, "yes": True},
        )
        # Clients whose ceiling lets customers manage assignments may carry it too (the
        # storefront), so that the existing admins' next refresh can invite.
        for client_id, scope in bind.execute(sa.text("SELECT client_id, scope FROM clients")):
            names = set(scope.split())
            if "iam.assignment_create_own" in names and MANAGE_OWN not in names:
                bind.execute(
                    sa.text("UPDATE clients SET scope = :scope WHERE client_id = :id"),
                    {"scope": " ".join(sorted(names | {MANAGE_OWN})), "id": client_id},
                )


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_events_legal_entity_id"), table_name="audit_events")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_column("legal_entity_id")
    op.drop_table("outbox")
    op.drop_table("invitations")
    op.execute("DELETE FROM customers WHERE status = 'invited'")
    _set_status_check(NEW_STATUS, OLD_STATUS)
