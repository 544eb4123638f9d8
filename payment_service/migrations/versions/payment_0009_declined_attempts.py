"""The card-testing rule's declines through partial indexes: a customer's or an address's
declined attempts are found without reading its approved ones.

Revision ID: payment_0009
Revises: payment_0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0009"
down_revision: str | Sequence[str] | None = "payment_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "risk_attempts_declined_by_user",
        "risk_attempts",
        ["user_id", "attempted_at"],
        postgresql_where=sa.text("declined"),
    )
    op.create_index(
        "risk_attempts_declined_by_ip",
        "risk_attempts",
        ["client_ip", "attempted_at"],
        postgresql_where=sa.text("declined"),
    )


def downgrade() -> None:
    op.drop_index("risk_attempts_declined_by_ip", table_name="risk_attempts")
    op.drop_index("risk_attempts_declined_by_user", table_name="risk_attempts")
