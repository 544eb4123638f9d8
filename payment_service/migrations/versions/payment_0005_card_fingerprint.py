"""Stripe's fingerprint of each saved card, and of the card each charge attempt used (kept
there: a card may be deleted later). The risk lists name a card by it.

Revision ID: payment_0005
Revises: payment_0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0005"
down_revision: str | Sequence[str] | None = "payment_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payment_methods", sa.Column("fingerprint", sa.Text))
    op.add_column("charge_attempts", sa.Column("card_fingerprint", sa.Text))


def downgrade() -> None:
    op.drop_column("charge_attempts", "card_fingerprint")
    op.drop_column("payment_methods", "fingerprint")
