"""Gauges kept current: the meters that feed limits, and each customer's value.

No backfill here: a customer's value is computed from its stored events on the first check
that reads it (docs/decisions/0030).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gauge_meters",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("meter_key", sa.String(length=100), nullable=False),
        sa.Column(
            "definition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("catalog_revision", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_gauge_meters_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "meter_key", name=op.f("pk_gauge_meters")),
    )
    op.create_table(
        "gauge_values",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("meter_key", sa.String(length=100), nullable=False),
        sa.Column("customer", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_gauge_values_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "meter_key", "customer", name=op.f("pk_gauge_values")),
    )


def downgrade() -> None:
    op.drop_table("gauge_values")
    op.drop_table("gauge_meters")
