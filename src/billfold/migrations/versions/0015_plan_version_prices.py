"""Plan versions carry prices (`plan_versions.prices`): per currency and interval, a
recurring fee, usage prices per meter, a minimum and trial days (catalog/prices.py).

Additive: existing versions get no prices (`[]`), which is what they had, and keep their
digest (prices enter a version's digest only when it has some), so the next apply of the
same plans file makes no new versions.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 09:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plan_versions") as batch_op:
        batch_op.add_column(
            sa.Column(
                "prices",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default="[]",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("plan_versions") as batch_op:
        batch_op.drop_column("prices")
