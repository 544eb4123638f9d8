"""The risk screening's hold: the ON_HOLD status (its orders' deadlines swept like the other
open ones), and the payment service's risk decisions kept for the risk report.

Revision ID: order_0004
Revises: order_0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "order_0004"
down_revision: str | Sequence[str] | None = "order_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "'PENDING', 'RESERVED', 'CONFIRMED', 'PROCESSING', 'COMPLETED', 'CANCELLED'"
_WITH_HOLD = "'PENDING', 'RESERVED', 'ON_HOLD', 'CONFIRMED', 'PROCESSING', 'COMPLETED', 'CANCELLED'"


def upgrade() -> None:
    op.drop_constraint("orders_status_known", "orders", type_="check")
    op.create_check_constraint("orders_status_known", "orders", f"status IN ({_WITH_HOLD})")
    op.drop_index("orders_open_deadline", table_name="orders")
    op.create_index(
        "orders_open_deadline",
        "orders",
        ["deadline"],
        postgresql_where=sa.text("status IN ('PENDING', 'RESERVED', 'ON_HOLD')"),
    )
    op.create_table(
        "order_risk",
        sa.Column("order_id", sa.Uuid(), primary_key=True),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_expires_at", sa.DateTime(timezone=True)),
        sa.Column("review_decided_at", sa.DateTime(timezone=True)),
    )
    op.create_index("order_risk_by_time", "order_risk", ["assessed_at"])
    op.create_index("order_risk_by_decision_time", "order_risk", ["review_decided_at"])


def downgrade() -> None:
    op.drop_table("order_risk")
    op.drop_index("orders_open_deadline", table_name="orders")
    op.create_index(
        "orders_open_deadline",
        "orders",
        ["deadline"],
        postgresql_where=sa.text("status IN ('PENDING', 'RESERVED')"),
    )
    op.execute("UPDATE orders SET status = 'RESERVED' WHERE status = 'ON_HOLD'")
    op.drop_constraint("orders_status_known", "orders", type_="check")
    op.create_check_constraint("orders_status_known", "orders", f"status IN ({_STATUSES})")
