"""Charges that wait for the customer (3-D Secure): the AWAITING_ACTION status.

Revision ID: payment_0008
Revises: payment_0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "payment_0008"
down_revision: str | Sequence[str] | None = "payment_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "'NONE', 'SUCCEEDED', 'FAILED', 'REFUNDED', 'EXPIRED', 'HELD', 'VOIDED'"
_WITH_ACTION = (
    "'NONE', 'SUCCEEDED', 'FAILED', 'REFUNDED', 'EXPIRED', 'HELD', 'AWAITING_ACTION', 'VOIDED'"
)


def upgrade() -> None:
    op.drop_constraint("order_payments_status", "order_payments", type_="check")
    op.create_check_constraint(
        "order_payments_status", "order_payments", f"status IN ({_WITH_ACTION})"
    )


def downgrade() -> None:
    # A charge still waiting cannot be told apart once the status is gone: it failed.
    op.execute("UPDATE order_payments SET status = 'FAILED' WHERE status = 'AWAITING_ACTION'")
    op.drop_constraint("order_payments_status", "order_payments", type_="check")
    op.create_check_constraint(
        "order_payments_status", "order_payments", f"status IN ({_STATUSES})"
    )
