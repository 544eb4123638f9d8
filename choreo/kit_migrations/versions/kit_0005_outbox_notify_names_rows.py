"""The outbox's NOTIFY names the rows it announces: its payload is the highest id the INSERT
statement wrote, so the relay can tell a commit it has read already (one that raced its last
read) from news, and skip a read that would find nothing (choreo.outbox.Relay).

Revision ID: kit_0005
Revises: kit_0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "kit_0005"
down_revision: str | Sequence[str] | None = "kit_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen as written for this revision: the runtime code's DDL may change, this may not.
UPGRADE = (
    """
    CREATE OR REPLACE FUNCTION choreo_outbox_notify() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('choreo_outbox', (SELECT max(id)::text FROM inserted));
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    "DROP TRIGGER outbox_notify ON outbox",
    """
    CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION choreo_outbox_notify()
    """,
)
DOWNGRADE = (
    """
    CREATE OR REPLACE FUNCTION choreo_outbox_notify() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('choreo_outbox', '');
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    "DROP TRIGGER outbox_notify ON outbox",
    """
    CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION choreo_outbox_notify()
    """,
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
