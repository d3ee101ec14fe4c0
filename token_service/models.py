"""Tables of DESIGN section 2. Models hold data and nothing else: no commits, no policy."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, MappedColumn, mapped_column, relationship

from .extensions import db

ASSIGNMENT_TYPES = ("PRIMARY", "BILLING", "LOGISTICS", "CONTACT")
GROUP_CODES = ("ADMIN", "BUYER", "REQUESTER", "CONTACT", "CUSTOM")
PREDEFINED_GROUPS = ("ADMIN", "BUYER", "REQUESTER", "CONTACT")


def utcnow() -> datetime:
    """Timezone-aware now; stored as UTC on both backends."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Opaque, URL-safe identifier, e.g. `cus_4kVx...`."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


def _link_key(target: str, **options) -> MappedColumn:
    """A primary-key column of a link table: it refers to `target`, and the link goes with the
    row it refers to."""
    return mapped_column(ForeignKey(target, ondelete="CASCADE"), primary_key=True, **options)


class UTCDateTime(db.TypeDecorator):
    """DateTime that always comes back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class LegalEntity(db.Model):
    __tablename__ = "legal_entities"
    __table_args__ = (
        CheckConstraint("type IN ('COMPANY', 'SUBSIDIARY')", name="type"),
        CheckConstraint(
            "(type = 'COMPANY' AND parent_id IS NULL)"
            " OR (type = 'SUBSIDIARY' AND parent_id IS NOT NULL)",
            name="parent",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    type: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("legal_entities.id", ondelete="RESTRICT"), index=True
    )
    account_limit_currency: Mapped[str | None] = mapped_column(String(3))
    account_limit_value: Mapped[float | None] = mapped_column(Numeric(18, 2))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


CUSTOMER_STATUSES = ("active", "blocked", "invited")


class Customer(db.Model):
    """`invited`: created by a company's invitation, no password yet, cannot log in until the
    invitation is accepted (see company.accept_invitation)."""

    __tablename__ = "customers"
    __table_args__ = (CheckConstraint("status IN ('active', 'blocked', 'invited')", name="status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Stored lower-cased: uniqueness is case-insensitive on every backend.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="active")
    default_legal_entity_id: Mapped[str | None] = mapped_column(
        ForeignKey("legal_entities.id", ondelete="SET NULL")
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Bumped, with the row locked, by every change that deny-lists the customer's tokens
    # (revocation.fence_issuance); the token endpoint writes a session or a rotation only if
    # this is still the value it read with the customer's entitlements. Not the ETag `version`:
    # a membership change must not turn an admin's next PATCH of the customer into a 412.
    entitlements_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Assignment(db.Model):
    __tablename__ = "assignments"
    __table_args__ = (
        CheckConstraint("type IN ('PRIMARY', 'BILLING', 'LOGISTICS', 'CONTACT')", name="type"),
    )

    customer_id: Mapped[str] = _link_key("customers.id")
    legal_entity_id: Mapped[str] = _link_key("legal_entities.id", index=True)
    type: Mapped[str] = mapped_column(String(16), default="CONTACT")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    legal_entity: Mapped[LegalEntity] = relationship(lazy="joined")


class Scope(db.Model):
    __tablename__ = "scopes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    predefined: Mapped[bool] = mapped_column(Boolean, default=False)


class CustomerGroup(db.Model):
    __tablename__ = "customer_groups"
    __table_args__ = (
        CheckConstraint(
            "code IN ('ADMIN', 'BUYER', 'REQUESTER', 'CONTACT', 'CUSTOM')", name="code"
        ),
        # Target of the membership foreign key that pins a member's entity to the group's.
        UniqueConstraint("id", "legal_entity_id", name="uq_customer_groups_id_entity"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    legal_entity_id: Mapped[str | None] = mapped_column(
        ForeignKey("legal_entities.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(16), default="CUSTOM")
    predefined: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GroupScope(db.Model):
    __tablename__ = "group_scopes"

    group_id: Mapped[str] = _link_key("customer_groups.id")
    scope: Mapped[str] = _link_key("scopes.name")


class GroupMember(db.Model):
    """A customer in a group. `legal_entity_id` copies the group's entity so that the database
    itself enforces DESIGN's rule: a member of an entity's group must be assigned to that entity
    (the composite foreign key to assignments cascades on unassignment; NULL = tenant-wide group,
    which the key does not constrain)."""

    __tablename__ = "group_members"
    __table_args__ = (
        ForeignKeyConstraint(
            ["group_id", "legal_entity_id"],
            ["customer_groups.id", "customer_groups.legal_entity_id"],
            ondelete="CASCADE",
            name="fk_group_members_group",
        ),
        ForeignKeyConstraint(
            ["customer_id", "legal_entity_id"],
            ["assignments.customer_id", "assignments.legal_entity_id"],
            ondelete="CASCADE",
            name="fk_group_members_assignment",
        ),
        Index("ix_group_members_customer", "customer_id", "legal_entity_id"),
    )

    group_id: Mapped[str] = _link_key("customer_groups.id")
    customer_id: Mapped[str] = _link_key("customers.id")
    legal_entity_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Client(db.Model):
    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    # Keyed hash of a high-entropy secret (see security.hash_client_secret); NULL = public client.
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    grant_types: Mapped[str] = mapped_column(String(255), default="")
    scope: Mapped[str] = mapped_column(Text, default="")  # the ceiling
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    audience: Mapped[str | None] = mapped_column(String(255))
    access_token_ttl: Mapped[int | None] = mapped_column(Integer)
    refresh_token_ttl: Mapped[int | None] = mapped_column(Integer)
    # Exact URIs (RFC 6749 §3.1.2.3, OIDC RP-Initiated Logout §3): nothing else is redirected to.
    redirect_uris: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")
    post_logout_redirect_uris: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")
    # Origins (`scheme://host[:port]`) its browser apps may call the API from (CORS, api/cors.py);
    # NULL: the origins of its redirect URIs.
    allowed_origins: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    # RFC 7591 §2 metadata shown to customers (the consent page) and kept for the client.
    client_uri: Mapped[str | None] = mapped_column(Text)
    logo_uri: Mapped[str | None] = mapped_column(Text)
    policy_uri: Mapped[str | None] = mapped_column(Text)
    tos_uri: Mapped[str | None] = mapped_column(Text)
    contacts: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    # RFC 7592: SHA-256 of the registration access token of a dynamically registered client.
    registration_access_token_hash: Mapped[str | None] = mapped_column(String(128))
    # OpenID Connect Back-Channel Logout 1.0 §2.2.
    backchannel_logout_uri: Mapped[str | None] = mapped_column(Text)
    backchannel_logout_session_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def is_public(self) -> bool:
        return self.secret_hash is None


class Session(db.Model):
    """A refresh-token family: one login, every rotation after it."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the `sid` claim
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text)  # ceiling, constant for the family
    legal_entity_id: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    # Unix time from which access tokens of this session are valid again after a deny-listing
    # (see revocation.deny_session): the token endpoint issues nothing older.
    tokens_not_before: Mapped[int | None] = mapped_column(BigInteger)


class RefreshToken(db.Model):
    __tablename__ = "refresh_tokens"

    # SHA-256 (hex) of the token: the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    # Set when the token is consumed: the token that replaced it (its grace response's key).
    successor_hash: Mapped[str | None] = mapped_column(String(64))
    legal_entity_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(db.Model):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(16))  # customer | client | system
    actor_id: Mapped[str | None] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(255))
    # The legal entity the change happened in (None: none or several): a company's admins read
    # their own entity's events through self-service.
    legal_entity_id: Mapped[str | None] = mapped_column(String(64), index=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class Invitation(db.Model):
    """A company's invitation of an email address; one per (legal entity, email).

    It carries the link's single-use token (its SHA-256 only, cleared once used): an
    activation link for a new email (whose `invited` customer it names), a link to the
    hosted page where an existing customer joins or declines. Nothing is assigned before the
    invitee accepts (company.invite)."""

    __tablename__ = "invitations"
    __table_args__ = (
        UniqueConstraint("legal_entity_id", "email", name="uq_invitations_entity_email"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    legal_entity_id: Mapped[str] = mapped_column(
        ForeignKey("legal_entities.id", ondelete="CASCADE")
    )
    email: Mapped[str] = mapped_column(String(320))
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    invited_by: Mapped[str | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    declined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxMessage(db.Model):
    """A notification to deliver (an email for now), written in the transaction that caused it.

    Any mailer may read the pending rows (`sent_at` null); the built-in one is
    notifications.deliver_pending. The body holds the activation link, a credential: it is
    blanked once the message is delivered."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(255))


class BrowserSession(db.Model):
    """A sign-in at the hosted login page (SSO): the cookie holds a random token, this row its
    hash. The refresh-token families born from it are found through their codes."""

    __tablename__ = "browser_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cookie_hash: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuthorizationCode(db.Model):
    """RFC 6749 §4.1.2: single use, short-lived, bound to client, redirect URI and the PKCE
    challenge. Only the code's hash is stored; `session_id` names the refresh-token family
    issued from it (revoked if the code is replayed)."""

    __tablename__ = "authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    browser_session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(Text)
    legal_entity_id: Mapped[str | None] = mapped_column(String(64))
    nonce: Mapped[str | None] = mapped_column(String(512))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)


class Consent(db.Model):
    """A customer's consent to a third-party client for one scope set (sorted, space-joined)."""

    __tablename__ = "consents"

    customer_id: Mapped[str] = _link_key("customers.id")
    client_id: Mapped[str] = _link_key("clients.client_id")
    scope: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InitialAccessToken(db.Model):
    """What opens the registration endpoint (RFC 7591 §3): made by an admin, used up to
    `uses_left` times before `expires_at`. Only its SHA-256 is kept."""

    __tablename__ = "initial_access_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    uses_left: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BackchannelLogout(db.Model):
    """A logout token for a client's `backchannel_logout_uri` (OpenID Connect Back-Channel
    Logout 1.0), written in the transaction that ended the session and POSTed after it, with
    retries and backoff (`next_attempt_at`); `sent_at` once the client answered 200 or 204."""

    __tablename__ = "backchannel_logouts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    uri: Mapped[str] = mapped_column(Text)
    logout_token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(255))
