"""The risk screening's allow- and block-lists: one value of one kind on one list at a time.

Revision ID: payment_0004
Revises: payment_0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0004"
down_revision: str | Sequence[str] | None = "payment_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "risk_list_entries",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.func.gen_random_uuid()),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "kind IN ('card_fingerprint', 'email', 'ip', 'customer')",
            name="risk_list_entries_kind",
        ),
        sa.CheckConstraint("action IN ('allow', 'block')", name="risk_list_entries_action"),
        sa.UniqueConstraint("kind", "value", name="risk_list_entries_one_list"),
    )
    op.create_index("risk_list_entries_by_time", "risk_list_entries", ["created_at", "id"])


def downgrade() -> None:
    op.drop_table("risk_list_entries")
