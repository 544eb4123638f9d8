"""The order service's own tables (the kit's outbox and inbox come from choreo)."""

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
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("user_id", Uuid(as_uuid=False), nullable=False),
    Column("status", Text, nullable=False),
    Column("cancel_reason", Text),
    # Whether a PaymentSucceeded was seen for the order (even after it was cancelled).
    Column("charged", Boolean, nullable=False, server_default=text("false")),
    Column("total_amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("payment_method_id", Text),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", Text),
    # Digest of the request that created the order, to answer a retry with the same key.
    Column("request_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "status IN ('PENDING', 'RESERVED', 'ON_HOLD', 'AWAITING_PAYMENT_ACTION', 'CONFIRMED', "
        "'PROCESSING', 'COMPLETED', 'CANCELLED')",
        name="orders_status_known",
    ),
    CheckConstraint(
        "(status = 'CANCELLED') = (cancel_reason IS NOT NULL)", name="orders_cancel_reason"
    ),
    UniqueConstraint("user_id", "idempotency_key", name="orders_user_idempotency_key"),
    Index("orders_user_newest", "user_id", "created_at", "id"),
    Index("orders_newest", "created_at", "id"),
    Index("orders_status_newest", "status", "created_at", "id"),
    Index(
        "orders_open_deadline",
        "deadline",
        postgresql_where=text(
            "status IN ('PENDING', 'RESERVED', 'ON_HOLD', 'AWAITING_PAYMENT_ACTION')"
        ),
    ),
)

order_items = Table(
    "order_items",
    metadata,
    Column("order_id", Uuid(as_uuid=False), ForeignKey("orders.id"), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("product_id", Uuid(as_uuid=False), nullable=False),
    Column("name", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    PrimaryKeyConstraint("order_id", "line_number"),
    UniqueConstraint("order_id", "product_id", name="order_items_one_line_per_product"),
    CheckConstraint("quantity > 0", name="order_items_quantity_positive"),
)

# Every event this service consumed or emitted for an order, in the order it happened here.
order_timeline = Table(
    "order_timeline",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("order_id", Uuid(as_uuid=False), ForeignKey("orders.id"), nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("direction", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("summary", Text, nullable=False),
    CheckConstraint("direction IN ('consumed', 'emitted')", name="order_timeline_direction"),
    Index("order_timeline_of_order", "order_id", "id"),
    # The reports count events of one type per period.
    Index("order_timeline_by_type", "event_type", "occurred_at"),
)

# Refunds the payment service announced (PaymentRefunded), for the reports: each counts on the
# day it was made, whatever the day of its order.
order_refunds = Table(
    "order_refunds",
    metadata,
    Column("refund_id", Uuid(as_uuid=False), primary_key=True),
    Column("order_id", Uuid(as_uuid=False), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("refunded_at", DateTime(timezone=True), nullable=False),
    Index("order_refunds_by_time", "refunded_at"),
)

# The payment service's risk decisions (RiskAssessed), for the risk report: when each was made,
# and when a held order's review was decided (its payment's outcome, or its cancellation).
order_risk = Table(
    "order_risk",
    metadata,
    Column("order_id", Uuid(as_uuid=False), primary_key=True),
    Column("decision", Text, nullable=False),
    Column("score", Integer, nullable=False),
    Column("assessed_at", DateTime(timezone=True), nullable=False),
    Column("review_expires_at", DateTime(timezone=True)),
    Column("review_decided_at", DateTime(timezone=True)),
    Index("order_risk_by_time", "assessed_at"),
    Index("order_risk_by_decision_time", "review_decided_at"),
)

# What the customer's client needs to authenticate the order's payment (PaymentActionRequired),
# kept while the order is AWAITING_PAYMENT_ACTION and deleted when it leaves it: the client
# secret is shown to the order's customer only, and only while it is of use.
order_payment_actions = Table(
    "order_payment_actions",
    metadata,
    Column("order_id", Uuid(as_uuid=False), ForeignKey("orders.id"), primary_key=True),
    Column("provider_payment_id", Text, nullable=False),
    Column("client_secret", Text, nullable=False),
    Column("next_action_type", Text, nullable=False),
    Column("redirect_url", Text),
    Column("required_at", DateTime(timezone=True), nullable=False),
)
