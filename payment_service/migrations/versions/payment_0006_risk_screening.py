"""The risk screening in the saga: each customer's e-mail and account age (from user.event),
one row per screened charge (the velocity rules count them), every decision with its
explanation and review, the client's IP address of each order, and the HELD and VOIDED
statuses of a charge held for review.

Revision ID: payment_0006
Revises: payment_0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "payment_0006"
down_revision: str | Sequence[str] | None = "payment_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = "status IN ('NONE', 'SUCCEEDED', 'FAILED', 'REFUNDED', 'EXPIRED')"
_NEW_STATUSES = "status IN ('NONE', 'SUCCEEDED', 'FAILED', 'REFUNDED', 'EXPIRED', 'HELD', 'VOIDED')"


def upgrade() -> None:
    op.add_column("order_payments", sa.Column("client_ip", sa.Text))
    op.drop_constraint("order_payments_status", "order_payments", type_="check")
    op.create_check_constraint("order_payments_status", "order_payments", _NEW_STATUSES)
    op.create_table(
        "risk_customers",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("email", sa.Text),
        sa.Column("registered_at", sa.DateTime(timezone=True)),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "risk_attempts",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("card_fingerprint", sa.Text),
        sa.Column("client_ip", sa.Text),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("declined", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("risk_attempts_by_card", "risk_attempts", ["card_fingerprint", "attempted_at"])
    op.create_index("risk_attempts_by_ip", "risk_attempts", ["client_ip", "attempted_at"])
    op.create_index("risk_attempts_by_user", "risk_attempts", ["user_id", "attempted_at"])
    op.create_table(
        "risk_assessments",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("reasons", JSONB, nullable=False),
        sa.Column("counters", JSONB),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_status", sa.Text),
        sa.Column("review_expires_at", sa.DateTime(timezone=True)),
        sa.Column("review_opened_at", sa.DateTime(timezone=True)),
        sa.Column("review_closed_at", sa.DateTime(timezone=True)),
        sa.Column("review_closed_by", sa.Text),
        sa.Column("review_note", sa.Text),
        sa.CheckConstraint("decision IN ('APPROVE', 'REVIEW', 'DECLINE')", name="risk_decision"),
        sa.CheckConstraint(
            "review_status IN ('OPEN', 'APPROVED', 'REJECTED', 'EXPIRED', 'VOIDED')",
            name="risk_review_status",
        ),
    )
    op.create_index(
        "risk_reviews_open",
        "risk_assessments",
        ["review_expires_at"],
        postgresql_where=sa.text("review_status = 'OPEN'"),
    )
    op.create_index("risk_assessments_by_time", "risk_assessments", ["assessed_at", "order_id"])


def downgrade() -> None:
    op.drop_table("risk_assessments")
    op.drop_table("risk_attempts")
    op.drop_table("risk_customers")
    op.execute("UPDATE order_payments SET status = 'FAILED' WHERE status IN ('HELD', 'VOIDED')")
    op.drop_constraint("order_payments_status", "order_payments", type_="check")
    op.create_check_constraint("order_payments_status", "order_payments", _OLD_STATUSES)
    op.drop_column("order_payments", "client_ip")
