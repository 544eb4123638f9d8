"""The order's deadline on its payment row, and EXPIRED: too late to charge, with the reason.

Revision ID: payment_0003
Revises: payment_0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0003"
down_revision: str | Sequence[str] | None = "payment_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("order_payments", sa.Column("deadline", sa.DateTime(timezone=True)))
    op.add_column("order_payments", sa.Column("no_charge_reason", sa.Text))
    op.drop_constraint("order_payments_status", "order_payments", type_="check")
    op.create_check_constraint(
        "order_payments_status",
        "order_payments",
        "status IN ('NONE', 'SUCCEEDED', 'FAILED', 'REFUNDED', 'EXPIRED')",
    )


def downgrade() -> None:
    op.execute("UPDATE order_payments SET status = 'NONE' WHERE status = 'EXPIRED'")
    op.drop_constraint("order_payments_status", "order_payments", type_="check")
    op.create_check_constraint(
        "order_payments_status",
        "order_payments",
        "status IN ('NONE', 'SUCCEEDED', 'FAILED', 'REFUNDED')",
    )
    op.drop_column("order_payments", "no_charge_reason")
    op.drop_column("order_payments", "deadline")
