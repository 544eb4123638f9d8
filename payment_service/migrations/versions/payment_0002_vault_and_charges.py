"""The card vault (customers, payment methods) and the charges (order payments, attempts).

Revision ID: payment_0002
Revises: payment_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0002"
down_revision: str | Sequence[str] | None = "payment_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column[datetime]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("provider_customer_id", sa.Text, nullable=False, unique=True),
        _created_at(),
    )
    op.create_table(
        "payment_methods",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("provider_payment_method_id", sa.Text, nullable=False),
        sa.Column("brand", sa.Text, nullable=False),
        sa.Column("last4", sa.Text, nullable=False),
        sa.Column("exp_month", sa.Integer, nullable=False),
        sa.Column("exp_year", sa.Integer, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.text("false")),
        _created_at(),
    )
    op.create_index("payment_methods_by_user", "payment_methods", ["user_id", "created_at", "id"])
    op.create_index(
        "payment_methods_one_default",
        "payment_methods",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.create_table(
        "order_payments",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column(
            "payment_id",
            sa.Uuid,
            nullable=False,
            unique=True,
            server_default=sa.func.gen_random_uuid(),
        ),
        sa.Column("order_known", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("user_id", sa.Text),
        sa.Column("amount", sa.BigInteger),
        sa.Column("currency", sa.Text),
        sa.Column("payment_method_id", sa.Text),
        sa.Column("stock_reserved", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'NONE'")),
        sa.Column("provider_payment_id", sa.Text),
        sa.Column("decline_code", sa.Text),
        sa.Column("failure_message", sa.Text),
        sa.Column("charged_at", sa.DateTime(timezone=True)),
        sa.Column("refund_id", sa.Uuid),
        sa.Column("provider_refund_id", sa.Text),
        sa.Column("refunded_amount", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("refunded_at", sa.DateTime(timezone=True)),
        _created_at(),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('NONE', 'SUCCEEDED', 'FAILED', 'REFUNDED')", name="order_payments_status"
        ),
    )
    op.create_index(
        "order_payments_by_user", "order_payments", ["user_id", "created_at", "order_id"]
    )
    op.create_index("order_payments_by_time", "order_payments", ["created_at", "order_id"])
    op.create_table(
        "charge_attempts",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column("provider_payment_id", sa.Text, nullable=False, unique=True),
        sa.Column("provider_payment_method_id", sa.Text, nullable=False),
        _created_at(),
    )


def downgrade() -> None:
    op.drop_table("charge_attempts")
    op.drop_table("order_payments")
    op.drop_table("payment_methods")
    op.drop_table("customers")
