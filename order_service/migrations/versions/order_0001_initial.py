"""The order service's branch, on top of the kit's outbox and inbox tables.

Revision ID: order_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

revision: str = "order_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("order",)
depends_on: str | Sequence[str] | None = ("kit_0001",)


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
