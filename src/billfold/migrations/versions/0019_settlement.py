"""Settlement: split tables per app (versioned), settled payments, payout batches with
their lines, and each tenant's payout lock (docs/settlement.md, decision 0044).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 14:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billfold.kit.db import Exact, UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "split_tables",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=48), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("shares", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_split_tables_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "app_id", "version", name="pk_split_tables"),
    )
    op.create_table(
        "settlements",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("app_id", sa.String(length=48), nullable=True),
        sa.Column("payer", sa.String(length=255), nullable=True),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("fee_percent", Exact(), nullable=True),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("split_version", sa.Integer(), nullable=True),
        sa.Column("parts", JSON, nullable=False),
        sa.Column("transfer_ids", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_settlements_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_settlements"),
    )
    op.create_table(
        "payout_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_payout_batches_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_batches")),
        sa.UniqueConstraint("tenant_id", "period", name="uq_payout_batches_period"),
    )
    op.create_table(
        "payout_lines",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("payee", sa.String(length=48), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("transfer_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["payout_batches.id"], name="fk_payout_lines_batch"),
        sa.PrimaryKeyConstraint("batch_id", "payee", "currency", name="pk_payout_lines"),
    )
    op.create_table(
        "payout_heads",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("last_batch_id", sa.String(length=40), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_payout_heads_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_payout_heads")),
    )


def downgrade() -> None:
    op.drop_table("payout_heads")
    op.drop_table("payout_lines")
    op.drop_table("payout_batches")
    op.drop_table("settlements")
    op.drop_table("split_tables")
