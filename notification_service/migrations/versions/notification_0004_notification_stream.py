"""A per-row sequence for the live stream of in-app notifications, in commit order, and a
NOTIFY at each commit that adds one.

`seq` is what the stream sends as the SSE event id. It is assigned when the inserting
transaction commits, under a transaction-scoped advisory lock, so a row with a higher `seq`
never becomes visible before one with a lower `seq`: a stream that has sent `seq` N and reads
`seq > N` misses nothing. The NOTIFY (`user_id:seq` on `notification_stream`) is delivered
only on commit, so no stream ever sees an uncommitted row.

Revision ID: notification_0004
Revises: notification_0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "notification_0004"
down_revision: str | Sequence[str] | None = "notification_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The advisory lock that orders the commits adding notifications (any fixed key that no other
# lock of this database uses).
STREAM_LOCK = 0x6E6F746966  # "notif"

STREAM_TRIGGER_DDL = (
    f"""
    CREATE FUNCTION notification_stream_commit() RETURNS trigger AS $$
    DECLARE
        assigned bigint;
    BEGIN
        PERFORM pg_advisory_xact_lock({STREAM_LOCK});
        UPDATE notifications
           SET seq = nextval(pg_get_serial_sequence('notifications', 'seq'))
         WHERE id = NEW.id
        RETURNING seq INTO assigned;
        IF assigned IS NOT NULL THEN
            PERFORM pg_notify('notification_stream', NEW.user_id || ':' || assigned);
        END IF;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE CONSTRAINT TRIGGER notification_stream AFTER INSERT ON notifications
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION notification_stream_commit()
    """,
)


def upgrade() -> None:
    op.add_column(
        "notifications",
        sa.Column("seq", sa.BigInteger, sa.Identity(always=False), nullable=False),
    )
    # Existing rows in the order they were written.
    op.execute(
        "UPDATE notifications SET seq = numbered.seq FROM ("
        " SELECT id, nextval(pg_get_serial_sequence('notifications', 'seq')) AS seq"
        " FROM (SELECT id FROM notifications ORDER BY created_at, id) AS ordered"
        ") AS numbered WHERE notifications.id = numbered.id"
    )
    op.create_index("notifications_stream", "notifications", ["user_id", "seq"], unique=True)
    for statement in STREAM_TRIGGER_DDL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER notification_stream ON notifications")
    op.execute("DROP FUNCTION notification_stream_commit()")
    op.drop_index("notifications_stream", table_name="notifications")
    op.drop_column("notifications", "seq")
