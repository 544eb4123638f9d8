"""Contact and order replicas, e-mail deliveries, in-app notifications.

Revision ID: notification_0002
Revises: notification_0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "notification_0002"
down_revision: str | Sequence[str] | None = "notification_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("email", sa.Text),
        sa.Column("full_name", sa.Text),
        sa.Column("role", sa.Text),
        _timestamp("details_at", nullable=True),
        _timestamp("deleted_at", nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
    )
    op.create_index(
        "contacts_admins", "contacts", ["user_id"], postgresql_where=sa.text("role = 'admin'")
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        _timestamp("created_at"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.func.gen_random_uuid()),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("last_error", sa.Text),
        sa.Column("provider_message_id", sa.Text),
        _timestamp("claimed_at"),
        _timestamp("sent_at", nullable=True),
        _timestamp("updated_at"),
        sa.UniqueConstraint("event_id", "recipient", "kind", name="deliveries_once"),
        sa.CheckConstraint("status IN ('claimed', 'sent', 'failed')", name="deliveries_status"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.func.gen_random_uuid()),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        _timestamp("created_at"),
        _timestamp("read_at", nullable=True),
        sa.UniqueConstraint("event_id", "user_id", "kind", name="notifications_once"),
    )
    op.create_index("notifications_by_user", "notifications", ["user_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("deliveries")
    op.drop_table("orders")
    op.drop_table("contacts")
