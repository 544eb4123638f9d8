"""Where the open-intent sweep's next pass starts: kept across restarts, so a process's first
pass no longer lists every intent the account ever held.

Revision ID: payment_0010
Revises: payment_0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0010"
down_revision: str | Sequence[str] | None = "payment_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intent_sweeps",
        sa.Column("sweep", sa.Text, primary_key=True),
        sa.Column("resume_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("intent_sweeps")
