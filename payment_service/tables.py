"""The payment service's own tables (the kit's outbox and inbox come from choreo).

Only the provider's ids, the brand, the last four digits, the expiry and Stripe's fingerprint of
a card are kept: never its number or CVC.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# The provider's customer of each user, created when the user saves a first card.
customers = Table(
    "customers",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("provider_customer_id", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

payment_methods = Table(
    "payment_methods",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("provider_payment_method_id", Text, nullable=False),
    Column("brand", Text, nullable=False),
    Column("last4", Text, nullable=False),
    Column("exp_month", Integer, nullable=False),
    Column("exp_year", Integer, nullable=False),
    # Stripe's card.fingerprint (null for cards saved before it was kept): one per card number.
    Column("fingerprint", Text),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("payment_methods_by_user", "user_id", "created_at", "id"),
    Index(
        "payment_methods_one_default",
        "user_id",
        unique=True,
        postgresql_where=text("is_default"),
    ),
)

# One row per order: the facts learned from its events, and its charge (docs/saga.md).
order_payments = Table(
    "order_payments",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    # The service's own id of the payment, named in the events it publishes.
    Column("payment_id", Uuid, nullable=False, unique=True, server_default=func.gen_random_uuid()),
    # Facts from OrderCreated (order known), StockReserved and OrderCancelled.
    Column("order_known", Boolean, nullable=False, server_default=text("false")),
    Column("user_id", Text),
    Column("amount", BigInteger),
    Column("currency", Text),
    Column("payment_method_id", Text),  # as ordered; null: the user's default method
    Column("client_ip", Text),  # OrderCreated v2: where the order was placed from, if known
    Column("stock_reserved", Boolean, nullable=False, server_default=text("false")),
    Column("cancelled", Boolean, nullable=False, server_default=text("false")),
    Column("deadline", DateTime(timezone=True)),  # from OrderCreated; null on older rows
    # The charge. CHARGING is not stored here but in charge_attempts (see there). EXPIRED:
    # too late to charge, and `no_charge_reason` says why.
    Column("status", Text, nullable=False, server_default=text("'NONE'")),
    Column("provider_payment_id", Text),
    Column("decline_code", Text),
    Column("failure_message", Text),
    Column("charged_at", DateTime(timezone=True)),  # when the outcome was recorded
    Column("refund_id", Uuid),
    Column("provider_refund_id", Text),
    Column("refunded_amount", BigInteger, nullable=False, server_default=text("0")),
    Column("refunded_at", DateTime(timezone=True)),
    Column("no_charge_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "status IN ('NONE', 'SUCCEEDED', 'FAILED', 'REFUNDED', 'EXPIRED', 'HELD', "
        "'AWAITING_ACTION', 'VOIDED')",
        name="order_payments_status",
    ),
    Index("order_payments_by_user", "user_id", "created_at", "order_id"),
    Index("order_payments_by_time", "created_at", "order_id"),
)

# Phase one of a charge: the intent's id, committed before the intent is confirmed, in a
# transaction of its own. It is a table apart because the handler that charges holds the
# order's order_payments row locked until its own commit: a second transaction writing that
# row would wait for it forever. An attempt whose order is still NONE is CHARGING.
charge_attempts = Table(
    "charge_attempts",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("provider_payment_id", Text, nullable=False, unique=True),
    Column("provider_payment_method_id", Text, nullable=False),
    # The charged card's fingerprint, kept with the attempt: the card may be deleted later.
    Column("card_fingerprint", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The risk screening's allow- and block-lists (payment_service.risk): one value of one kind
# is on one list at a time, in the form `risk.normalized` gives it.
risk_list_entries = Table(
    "risk_list_entries",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
    Column("kind", Text, nullable=False),
    Column("value", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("note", Text),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "kind IN ('card_fingerprint', 'email', 'ip', 'customer')", name="risk_list_entries_kind"
    ),
    CheckConstraint("action IN ('allow', 'block')", name="risk_list_entries_action"),
    UniqueConstraint("kind", "value", name="risk_list_entries_one_list"),
    Index("risk_list_entries_by_time", "created_at", "id"),
)

# The risk screening's view of each customer, from UserRegistered and UserUpdated: the e-mail
# the lists match and the account's age.
risk_customers = Table(
    "risk_customers",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("email", Text),
    Column("registered_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per screened charge: the counters of the velocity rules are counts of these rows in
# their windows, written in the transaction of the decision. `declined`: the charge was
# declined (by the provider or the screening), which the card-testing rule counts.
risk_attempts = Table(
    "risk_attempts",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("card_fingerprint", Text),
    Column("client_ip", Text),
    Column("amount", BigInteger, nullable=False),
    Column("declined", Boolean, nullable=False, server_default=text("false")),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Index("risk_attempts_by_card", "card_fingerprint", "attempted_at"),
    Index("risk_attempts_by_ip", "client_ip", "attempted_at"),
    Index("risk_attempts_by_user", "user_id", "attempted_at"),
    Index(
        "risk_attempts_declined_by_user",
        "user_id",
        "attempted_at",
        postgresql_where=text("declined"),
    ),
    Index(
        "risk_attempts_declined_by_ip",
        "client_ip",
        "attempted_at",
        postgresql_where=text("declined"),
    ),
)

# Every decision, with its explanation, and the review of a REVIEW: opened when the card is
# authorised (HELD), closed once (approved, rejected, expired, or the order cancelled).
risk_assessments = Table(
    "risk_assessments",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("decision", Text, nullable=False),
    Column("score", Integer, nullable=False),
    Column("reasons", JSONB, nullable=False),  # [{rule, points, detail}], the decider first
    Column("counters", JSONB),  # what the rules read; null when the check could not run
    Column("assessed_at", DateTime(timezone=True), nullable=False),
    Column("review_status", Text),  # null: no review; OPEN, APPROVED, REJECTED, EXPIRED, VOIDED
    Column("review_expires_at", DateTime(timezone=True)),
    Column("review_opened_at", DateTime(timezone=True)),
    Column("review_closed_at", DateTime(timezone=True)),
    Column("review_closed_by", Text),  # the admin's user id; null for the expiry sweep
    Column("review_note", Text),
    CheckConstraint("decision IN ('APPROVE', 'REVIEW', 'DECLINE')", name="risk_decision"),
    CheckConstraint(
        "review_status IN ('OPEN', 'APPROVED', 'REJECTED', 'EXPIRED', 'VOIDED')",
        name="risk_review_status",
    ),
    Index(
        "risk_reviews_open",
        "review_expires_at",
        postgresql_where=text("review_status = 'OPEN'"),
    ),
    Index("risk_assessments_by_time", "assessed_at", "order_id"),
)

# The Stripe events (webhooks) applied: one row per Stripe event id, written in the transaction
# of its effects, so a webhook delivered twice is applied once (the webhooks' inbox).
stripe_events = Table(
    "stripe_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("outcome", Text, nullable=False),  # settled (it moved an order on) or ignored
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Where the open-intent sweep's next pass starts listing the provider's intents (created at or
# after `resume_from`), kept here so that a restarted process goes on from where the last one
# stopped instead of paging through every intent ever created (handlers/intents.py).
intent_sweeps = Table(
    "intent_sweeps",
    metadata,
    Column("sweep", Text, primary_key=True),
    Column("resume_from", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
