"""Plans can be not for sale (`plans.for_sale`), and claim codes can grant one feature
(`claim_batches.feature_key` and `feature_value`, `plan_id` now optional): decision 0029.

Both are additive: existing plans are for sale, existing batches grant their plan. A
process of the previous release reads neither column and keeps working while this runs.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch_op:
        batch_op.add_column(
            sa.Column("for_sale", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    with op.batch_alter_table("claim_batches") as batch_op:
        batch_op.add_column(sa.Column("feature_key", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column(
                "feature_value",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.alter_column("plan_id", existing_type=sa.String(length=40), nullable=True)
        batch_op.create_check_constraint(
            op.f("ck_claim_batches_plan_or_feature"), "(plan_id IS NULL) <> (feature_key IS NULL)"
        )


def downgrade() -> None:
    # A batch that grants a feature has no plan to fall back on: it cannot survive the
    # downgrade, and neither can its codes or their redemptions (the grants stay).
    op.execute(
        "DELETE FROM claim_redemptions WHERE code_id IN (SELECT c.id FROM claim_codes c "
        "JOIN claim_batches b ON b.id = c.batch_id WHERE b.feature_key IS NOT NULL)"
    )
    op.execute(
        "DELETE FROM claim_codes WHERE batch_id IN "
        "(SELECT id FROM claim_batches WHERE feature_key IS NOT NULL)"
    )
    op.execute("DELETE FROM claim_batches WHERE feature_key IS NOT NULL")
    with op.batch_alter_table("claim_batches") as batch_op:
        batch_op.drop_constraint(op.f("ck_claim_batches_plan_or_feature"), type_="check")
        batch_op.alter_column("plan_id", existing_type=sa.String(length=40), nullable=False)
        batch_op.drop_column("feature_value")
        batch_op.drop_column("feature_key")
    with op.batch_alter_table("plans") as batch_op:
        batch_op.drop_column("for_sale")
