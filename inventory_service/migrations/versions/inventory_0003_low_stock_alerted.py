"""Whether a product's low stock was announced: one LowStockDetected per crossing.

Products already at or below their threshold start alerted: the earlier rule announced them at
every reservation, so their admins have heard, and the upgrade sends no burst of alerts.

Revision ID: inventory_0003
Revises: inventory_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "inventory_0003"
down_revision: str | Sequence[str] | None = "inventory_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "products",
        sa.Column("low_stock_alerted", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.execute("UPDATE products SET low_stock_alerted = available <= low_stock_threshold")


def downgrade() -> None:
    op.drop_column("products", "low_stock_alerted")
