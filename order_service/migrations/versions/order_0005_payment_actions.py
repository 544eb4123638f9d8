"""Payments that wait for the customer (3-D Secure): the AWAITING_PAYMENT_ACTION status (its
orders' deadlines swept like the other open ones), and what the customer's client needs.

Revision ID: order_0005
Revises: order_0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "order_0005"
down_revision: str | Sequence[str] | None = "order_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "'PENDING', 'RESERVED', 'ON_HOLD', 'CONFIRMED', 'PROCESSING', 'COMPLETED', 'CANCELLED'"
_WITH_ACTION = (
    "'PENDING', 'RESERVED', 'ON_HOLD', 'AWAITING_PAYMENT_ACTION', 'CONFIRMED', 'PROCESSING', "
    "'COMPLETED', 'CANCELLED'"
)


def _open_deadline_index(statuses: str) -> None:
    op.drop_index("orders_open_deadline", table_name="orders")
    op.create_index(
        "orders_open_deadline",
        "orders",
        ["deadline"],
        postgresql_where=sa.text(f"status IN ({statuses})"),
    )


def upgrade() -> None:
    op.drop_constraint("orders_status_known", "orders", type_="check")
    op.create_check_constraint("orders_status_known", "orders", f"status IN ({_WITH_ACTION})")
    _open_deadline_index("'PENDING', 'RESERVED', 'ON_HOLD', 'AWAITING_PAYMENT_ACTION'")
    op.create_table(
        "order_payment_actions",
        sa.Column("order_id", sa.Uuid(), sa.ForeignKey("orders.id"), primary_key=True),
        sa.Column("provider_payment_id", sa.Text(), nullable=False),
        sa.Column("client_secret", sa.Text(), nullable=False),
        sa.Column("next_action_type", sa.Text(), nullable=False),
        sa.Column("redirect_url", sa.Text()),
        sa.Column("required_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("order_payment_actions")
    _open_deadline_index("'PENDING', 'RESERVED', 'ON_HOLD'")
    # The order still waits for its payment's outcome, as a RESERVED one does.
    op.execute("UPDATE orders SET status = 'RESERVED' WHERE status = 'AWAITING_PAYMENT_ACTION'")
    op.drop_constraint("orders_status_known", "orders", type_="check")
    op.create_check_constraint("orders_status_known", "orders", f"status IN ({_STATUSES})")
