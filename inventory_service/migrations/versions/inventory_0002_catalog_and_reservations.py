"""Products with their stock counters, reservations and their lines, stock adjustments.

Revision ID: inventory_0002
Revises: inventory_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "inventory_0002"
down_revision: str | Sequence[str] | None = "inventory_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = postgresql.UUID(as_uuid=False)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("available", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sold", sa.Integer, nullable=False, server_default="0"),
        sa.Column("low_stock_threshold", sa.Integer, nullable=False),
        sa.Column(
            "features", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")
        ),
        sa.Column("image_url", sa.Text),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("deleted_at", nullable=True),
        sa.CheckConstraint("price > 0", name="products_price_positive"),
        sa.CheckConstraint(
            "available >= 0 AND reserved >= 0 AND sold >= 0", name="products_stock_not_negative"
        ),
        sa.CheckConstraint("low_stock_threshold >= 0", name="products_threshold_not_negative"),
    )
    op.create_index(
        "products_listing",
        "products",
        ["created_at", "id"],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "products_category",
        "products",
        [sa.text("lower(category)")],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "reservations",
        sa.Column("order_id", UUID, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        _timestamp("created_at"),
        _timestamp("updated_at"),
    )
    op.create_table(
        "reservation_lines",
        sa.Column(
            "order_id",
            UUID,
            sa.ForeignKey("reservations.order_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("product_id", UUID, sa.ForeignKey("products.id"), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("order_id", "product_id"),
        sa.CheckConstraint("quantity > 0", name="reservation_lines_quantity_positive"),
    )
    op.create_table(
        "stock_adjustments",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("product_id", UUID, sa.ForeignKey("products.id"), nullable=False),
        sa.Column("delta", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("available_after", sa.Integer, nullable=False),
        sa.Column("actor_id", sa.Text, nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint("delta <> 0", name="stock_adjustments_delta_not_zero"),
    )
    op.create_index("stock_adjustments_product", "stock_adjustments", ["product_id", "id"])


def downgrade() -> None:
    op.drop_table("stock_adjustments")
    op.drop_table("reservation_lines")
    op.drop_table("reservations")
    op.drop_table("products")
