"""Ledger: accounts with their four balances, and append-only transfers (docs/ledger.md,
decision 0039).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billfold.kit.db import UTCDateTime

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=True),
        sa.Column("debits_posted", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_ledger_accounts_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("tenant_id", "code", name="uq_ledger_accounts_code"),
    )
    op.create_table(
        "ledger_transfers",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("debit_account_id", sa.String(length=40), nullable=False),
        sa.Column("credit_account_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("pending_id", sa.String(length=128), nullable=True),
        sa.Column("timeout_s", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_credit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["debit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_debit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "pending_id"],
            ["ledger_transfers.tenant_id", "ledger_transfers.id"],
            name="fk_ledger_transfers_pending",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_ledger_transfers_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_ledger_transfers"),
        sa.UniqueConstraint("tenant_id", "pending_id", name="uq_ledger_transfers_resolution"),
    )
    with op.batch_alter_table("ledger_transfers", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_transfers_credit", ["credit_account_id"], unique=False)
        batch_op.create_index("ix_ledger_transfers_debit", ["debit_account_id"], unique=False)
        batch_op.create_index(
            "ix_ledger_transfers_expiry", ["tenant_id", "expires_at"], unique=False
        )
    _append_only("ledger_transfers")


def _append_only(table: str) -> None:
    """Refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) at the database itself, as
    migration 0003 does for usage events: a mistake is corrected by a reversing transfer."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION billfold_{table}_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{table} is append-only: % refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION billfold_{table}_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION billfold_{table}_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_transfers_no_truncate ON ledger_transfers")
        op.execute("DROP TRIGGER ledger_transfers_append_only ON ledger_transfers")
        op.execute("DROP FUNCTION billfold_ledger_transfers_append_only()")
    with op.batch_alter_table("ledger_transfers", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_transfers_expiry")
        batch_op.drop_index("ix_ledger_transfers_debit")
        batch_op.drop_index("ix_ledger_transfers_credit")
    op.drop_table("ledger_transfers")
    op.drop_table("ledger_accounts")
