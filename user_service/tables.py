"""The user service's own tables (the kit's outbox and inbox come from choreo).

`users` holds the accounts (soft-deleted: a deleted account keeps its row and its e-mail
address stays taken); `refresh_tokens` the digest of every refresh token handed out, grouped
in families (one per login, carried over by each rotation) so that a replayed token can
revoke every token descended from the same login; `password_reset_tokens` the digest of every
password-reset token e-mailed, each used at most once; `notification_preferences` the
channels a user chose per kind of notification (no row: the defaults).
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    # Normalised (trimmed, lower-case); unique across deleted accounts too.
    Column("email", Text, nullable=False, unique=True),
    # Argon2id, in the PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    Column("password_hash", Text, nullable=False),
    Column("full_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("phone", Text),
    Column("address", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
    CheckConstraint("role IN ('customer', 'admin')", name="users_role_known"),
    Index("users_newest", "created_at", "id", postgresql_where=text("deleted_at IS NULL")),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("family_id", Uuid(as_uuid=False), nullable=False),
    Column("user_id", Uuid(as_uuid=False), ForeignKey("users.id"), nullable=False),
    # SHA-256 of the token; the token itself is never stored.
    Column("token_digest", LargeBinary, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    # domain.RevokeReason: rotated, reuse_detected, account_deleted, logged_out,
    # password_changed.
    Column("revoked_reason", Text),
    Column("replaced_by", Uuid(as_uuid=False)),
    CheckConstraint(
        "(revoked_at IS NULL) = (revoked_reason IS NULL)", name="refresh_tokens_revocation"
    ),
    Index("refresh_tokens_family", "family_id"),
    Index("refresh_tokens_user", "user_id"),
    Index("refresh_tokens_expiry", "expires_at"),
)

password_reset_tokens = Table(
    "password_reset_tokens",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("user_id", Uuid(as_uuid=False), ForeignKey("users.id"), nullable=False),
    # SHA-256 of the token; the token itself is never stored here.
    Column("token_digest", LargeBinary, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # When it set the password; or when another reset or a password change voided it.
    Column("used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("password_reset_tokens_user", "user_id"),
    Index("password_reset_tokens_expiry", "expires_at"),
)

# Only what the user set: domain.stored_preferences lays it over the defaults when read.
notification_preferences = Table(
    "notification_preferences",
    metadata,
    Column("user_id", Uuid(as_uuid=False), ForeignKey("users.id"), primary_key=True),
    # {kind: {channel: bool}}, every kind and channel (domain.Preferences).
    Column("preferences", JSONB, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)
