"""Orders, their lines and their saga timeline.

Revision ID: order_0002
Revises: order_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "order_0002"
down_revision: str | Sequence[str] | None = "order_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("status IN ('PENDING', 'RESERVED')")


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("cancel_reason", sa.Text()),
        sa.Column("charged", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("total_amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("payment_method_id", sa.Text()),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.Text()),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('PENDING', 'RESERVED', 'CONFIRMED', 'PROCESSING', 'COMPLETED', "
            "'CANCELLED')",
            name="orders_status_known",
        ),
        sa.CheckConstraint(
            "(status = 'CANCELLED') = (cancel_reason IS NOT NULL)", name="orders_cancel_reason"
        ),
        sa.UniqueConstraint("user_id", "idempotency_key", name="orders_user_idempotency_key"),
    )
    op.create_index("orders_user_newest", "orders", ["user_id", "created_at", "id"])
    op.create_index("orders_newest", "orders", ["created_at", "id"])
    op.create_index("orders_status_newest", "orders", ["status", "created_at", "id"])
    op.create_index("orders_open_deadline", "orders", ["deadline"], postgresql_where=_OPEN)

    op.create_table(
        "order_items",
        sa.Column("order_id", sa.Uuid(), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "line_number"),
        sa.UniqueConstraint("order_id", "product_id", name="order_items_one_line_per_product"),
        sa.CheckConstraint("quantity > 0", name="order_items_quantity_positive"),
    )

    op.create_table(
        "order_timeline",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("order_id", sa.Uuid(), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.CheckConstraint("direction IN ('consumed', 'emitted')", name="order_timeline_direction"),
    )
    op.create_index("order_timeline_of_order", "order_timeline", ["order_id", "id"])


def downgrade() -> None:
    op.drop_table("order_timeline")
    op.drop_table("order_items")
    op.drop_table("orders")
