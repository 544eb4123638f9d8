"""The inventory service's branch, on top of the kit's outbox and inbox tables.

Revision ID: inventory_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

revision: str = "inventory_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("inventory",)
depends_on: str | Sequence[str] | None = ("kit_0001",)


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
