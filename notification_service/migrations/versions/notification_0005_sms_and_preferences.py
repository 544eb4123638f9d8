"""SMS and notification preferences: the contact's phone number, the preferences replica, and
the channel as part of a delivery's identity (existing deliveries are e-mails).

Revision ID: notification_0005
Revises: notification_0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "notification_0005"
down_revision: str | Sequence[str] | None = "notification_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("contacts", sa.Column("phone", sa.Text))
    op.create_table(
        "preferences",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("channels", JSONB, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.add_column(
        "deliveries",
        sa.Column("channel", sa.Text, nullable=False, server_default=sa.text("'email'")),
    )
    op.drop_constraint("deliveries_once", "deliveries", type_="unique")
    op.create_unique_constraint(
        "deliveries_once", "deliveries", ["event_id", "recipient", "kind", "channel"]
    )
    op.drop_constraint("deliveries_status", "deliveries", type_="check")
    op.create_check_constraint(
        "deliveries_status", "deliveries", "status IN ('claimed', 'sent', 'failed', 'skipped')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE channel <> 'email' OR status = 'skipped'")
    op.drop_constraint("deliveries_status", "deliveries", type_="check")
    op.create_check_constraint(
        "deliveries_status", "deliveries", "status IN ('claimed', 'sent', 'failed')"
    )
    op.drop_constraint("deliveries_once", "deliveries", type_="unique")
    op.create_unique_constraint("deliveries_once", "deliveries", ["event_id", "recipient", "kind"])
    op.drop_column("deliveries", "channel")
    op.drop_table("preferences")
    op.drop_column("contacts", "phone")
