"""Quota account versions: consume's unlocked path writes an account only if its version
is still the one it read (docs/decisions/0018).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("quota_accounts") as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("quota_accounts") as batch_op:
        batch_op.drop_column("version")
