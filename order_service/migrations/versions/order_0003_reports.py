"""For the admin reports: the refunds the payment service announced, and the timeline indexed
by event type and time.

Revision ID: order_0003
Revises: order_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "order_0003"
down_revision: str | Sequence[str] | None = "order_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_refunds",
        sa.Column("refund_id", sa.Uuid(), primary_key=True),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("order_refunds_by_time", "order_refunds", ["refunded_at"])
    op.create_index("order_timeline_by_type", "order_timeline", ["event_type", "occurred_at"])


def downgrade() -> None:
    op.drop_index("order_timeline_by_type", table_name="order_timeline")
    op.drop_table("order_refunds")
