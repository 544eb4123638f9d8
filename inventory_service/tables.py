"""The inventory service's own tables (the kit's outbox and inbox come from choreo).

`products` holds the catalog and each product's three stock counters; `reservations` and
`reservation_lines` the per-order facts of docs/saga.md; `stock_adjustments` every admin change
to a product's total stock (the only thing that may change it).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

products = Table(
    "products",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("category", Text, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("available", Integer, nullable=False),
    Column("reserved", Integer, nullable=False, server_default="0"),
    Column("sold", Integer, nullable=False, server_default="0"),
    Column("low_stock_threshold", Integer, nullable=False),
    # LowStockDetected was sent for the current stay at or below the threshold; cleared once
    # `available` rises above it again (domain.low_stock_alert).
    Column("low_stock_alerted", Boolean, nullable=False, server_default=text("false")),
    Column("features", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("image_url", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
    CheckConstraint("price > 0", name="products_price_positive"),
    CheckConstraint(
        "available >= 0 AND reserved >= 0 AND sold >= 0", name="products_stock_not_negative"
    ),
    CheckConstraint("low_stock_threshold >= 0", name="products_threshold_not_negative"),
    Index(
        "products_listing",
        "created_at",
        "id",
        postgresql_where=text("deleted_at IS NULL"),
    ),
    Index(
        "products_category",
        func.lower(text("category")),
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", UUID(as_uuid=False), primary_key=True),
    # RESERVED, RELEASED, COMMITTED, REJECTED, or a tombstone: CANCELLED_BEFORE_RESERVATION,
    # EXPIRED_BEFORE_RESERVATION (domain.py).
    Column("status", Text, nullable=False),
    # Why it was rejected or released (OUT_OF_STOCK, PAYMENT_FAILED, TIMEOUT, ...), or why an
    # order past its deadline got nothing (in words).
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column(
        "order_id",
        UUID(as_uuid=False),
        ForeignKey("reservations.order_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("product_id", UUID(as_uuid=False), ForeignKey("products.id"), nullable=False),
    Column("quantity", Integer, nullable=False),
    PrimaryKeyConstraint("order_id", "product_id"),
    CheckConstraint("quantity > 0", name="reservation_lines_quantity_positive"),
)

stock_adjustments = Table(
    "stock_adjustments",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("product_id", UUID(as_uuid=False), ForeignKey("products.id"), nullable=False),
    Column("delta", Integer, nullable=False),
    Column("reason", Text),
    Column("available_after", Integer, nullable=False),
    # The admin who made the change (the token's subject).
    Column("actor_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("delta <> 0", name="stock_adjustments_delta_not_zero"),
    Index("stock_adjustments_product", "product_id", "id"),
)
