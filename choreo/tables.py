"""The kit's own tables, in every service database: the outbox (and where each partition's log
ended when the relay last published to it), the inbox, and the revoked users and sessions.

They are declared here, on `kit_metadata`, and nowhere else, so the metadata holds all of them
whatever else was imported. The migrations (`choreo/kit_migrations/versions`) create them with
DDL of their own, frozen as it was when each migration was written; this module is the runtime
code's view of the tables as they are now.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

kit_metadata = MetaData()

NOTIFY_CHANNEL = "choreo_outbox"
"""The channel an outbox insert notifies, at commit (PostgreSQL delivers NOTIFY only then)."""

outbox_table = Table(
    "outbox",
    kit_metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Index("outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
)

outbox_log_ends = Table(
    "outbox_log_ends",
    kit_metadata,
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("end_offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("topic", "partition"),
)

inbox_table = Table(
    "inbox",
    kit_metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id"),
)

revoked_users = Table(
    "revoked_users",
    kit_metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

revoked_sessions = Table(
    "revoked_sessions",
    kit_metadata,
    # The `sid` claim of the session's access tokens (the user service's refresh-token family).
    Column("session_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    # Why it ended: logged_out, password_changed, password_reset, reuse_detected.
    Column("reason", Text, nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    # Every access token of the session has expired by then: the row may be deleted.
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("revoked_sessions_expiry", "expires_at"),
)

NOTIFY_TRIGGER_DDL = (
    f"""
    CREATE OR REPLACE FUNCTION choreo_outbox_notify() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', (SELECT max(id)::text FROM inserted));
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION choreo_outbox_notify()
    """,
)
"""Wakes the relay when a transaction that wrote outbox rows commits, naming the highest id each
INSERT wrote (PostgreSQL sends a transaction's notifications at its commit, one per distinct
payload). For a database made from `kit_metadata` directly, as the benchmark's scratch
databases are; migrations carry their own."""
