"""Wallets: wallets per (customer, unit), their lots (each a ledger account), spends,
holds and payment top-ups (docs/wallets.md, decision 0041).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 14:21:31.688513
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billfold.kit.db import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("low_balance", sa.BigInteger(), nullable=True),
        sa.Column("alert", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_wallets_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_wallets_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallets")),
        sa.UniqueConstraint("tenant_id", "customer_id", "unit", name="uq_wallets_customer_unit"),
    )
    op.create_table(
        "wallet_holds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("hold_id", sa.String(length=80), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("to_account", sa.String(length=100), nullable=False),
        sa.Column("timeout_s", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "legs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("settled_amount", sa.BigInteger(), nullable=True),
        sa.Column(
            "resolution",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_wallet_holds_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_holds_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_holds")),
        sa.UniqueConstraint("tenant_id", "hold_id", name="uq_wallet_holds_hold_id"),
    )
    with op.batch_alter_table("wallet_holds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_wallet_holds_open", ["tenant_id", "status", "expires_at"], unique=False
        )

    op.create_table(
        "wallet_lots",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("funded_by", sa.String(length=100), nullable=False),
        sa.Column("transfer_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_wallet_lots_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_wallet_lots_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_lots_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_lots")),
        sa.UniqueConstraint("tenant_id", "source", "reference", name="uq_wallet_lots_reference"),
    )
    with op.batch_alter_table("wallet_lots", schema=None) as batch_op:
        batch_op.create_index("ix_wallet_lots_expiry", ["tenant_id", "expires_at"], unique=False)
        batch_op.create_index(
            "ix_wallet_lots_order",
            ["wallet_id", "priority", "expires_at", "created_at"],
            unique=False,
        )

    op.create_table(
        "wallet_spends",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("requested", sa.BigInteger(), nullable=False),
        sa.Column("drawn", sa.BigInteger(), nullable=False),
        sa.Column("to_account", sa.String(length=100), nullable=False),
        sa.Column("allow_partial", sa.Integer(), nullable=False),
        sa.Column(
            "legs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_wallet_spends_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_spends_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_spends")),
        sa.UniqueConstraint("tenant_id", "reference", name="uq_wallet_spends_reference"),
    )
    op.create_table(
        "wallet_top_ups",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lot_id", sa.String(length=40), nullable=True),
        sa.Column("payment_reference", sa.String(length=100), nullable=True),
        sa.Column("failure", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_wallet_top_ups_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_top_ups_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_top_ups")),
        sa.UniqueConstraint("tenant_id", "reference", name="uq_wallet_top_ups_reference"),
    )

    # Claim codes can grant wallet credit (decision 0041): a batch grants a plan or a
    # feature, or wallet credit, or one of those and wallet credit; a redemption names
    # its grant or its lot or both. Additive: existing batches and redemptions keep
    # their meaning.
    with op.batch_alter_table("claim_batches") as batch_op:
        batch_op.add_column(sa.Column("wallet_unit", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("wallet_amount", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("wallet_expires_in_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("wallet_priority", sa.Integer(), nullable=True))
        batch_op.drop_constraint(op.f("ck_claim_batches_plan_or_feature"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_claim_batches_grants_something"),
            "(plan_id IS NULL OR feature_key IS NULL) AND "
            "(plan_id IS NOT NULL OR feature_key IS NOT NULL OR wallet_unit IS NOT NULL)",
        )
        batch_op.create_check_constraint(
            op.f("ck_claim_batches_wallet_credit"),
            "(wallet_unit IS NULL) = (wallet_amount IS NULL)",
        )
    with op.batch_alter_table("claim_redemptions") as batch_op:
        batch_op.alter_column("grant_id", existing_type=sa.String(length=40), nullable=True)
        batch_op.add_column(sa.Column("lot_id", sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_claim_redemptions_lot_id_wallet_lots"), "wallet_lots", ["lot_id"], ["id"]
        )


def downgrade() -> None:
    # A redemption or batch of wallet credit alone cannot survive the downgrade (the
    # lots and their ledger transfers stay).
    op.execute("DELETE FROM claim_redemptions WHERE grant_id IS NULL")
    op.execute(
        "DELETE FROM claim_codes WHERE batch_id IN (SELECT id FROM claim_batches "
        "WHERE plan_id IS NULL AND feature_key IS NULL)"
    )
    op.execute("DELETE FROM claim_batches WHERE plan_id IS NULL AND feature_key IS NULL")
    with op.batch_alter_table("claim_redemptions") as batch_op:
        batch_op.drop_constraint(
            op.f("fk_claim_redemptions_lot_id_wallet_lots"), type_="foreignkey"
        )
        batch_op.drop_column("lot_id")
        batch_op.alter_column("grant_id", existing_type=sa.String(length=40), nullable=False)
    with op.batch_alter_table("claim_batches") as batch_op:
        batch_op.drop_constraint(op.f("ck_claim_batches_wallet_credit"), type_="check")
        batch_op.drop_constraint(op.f("ck_claim_batches_grants_something"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_claim_batches_plan_or_feature"), "(plan_id IS NULL) <> (feature_key IS NULL)"
        )
        batch_op.drop_column("wallet_priority")
        batch_op.drop_column("wallet_expires_in_days")
        batch_op.drop_column("wallet_amount")
        batch_op.drop_column("wallet_unit")
    op.drop_table("wallet_top_ups")
    op.drop_table("wallet_spends")
    with op.batch_alter_table("wallet_lots", schema=None) as batch_op:
        batch_op.drop_index("ix_wallet_lots_order")
        batch_op.drop_index("ix_wallet_lots_expiry")

    op.drop_table("wallet_lots")
    with op.batch_alter_table("wallet_holds", schema=None) as batch_op:
        batch_op.drop_index("ix_wallet_holds_open")

    op.drop_table("wallet_holds")
    op.drop_table("wallets")
