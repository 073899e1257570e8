"""Billing: subscriptions get a currency, a billing cycle, a quantity, trials, pauses and
scheduled changes; customers get billing details and may sit on a test clock; invoices,
their lines, pending lines (prorations waiting for the next invoice) and each tenant's
invoice numbers arrive (docs/invoices.md).

The one-active-subscription index becomes one *live* subscription per customer (any
state but canceled), now that trialing, past_due and paused subscriptions also count.
Additive otherwise: existing subscriptions have no currency and are never invoiced, as
before.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 09:22:10.389909
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billfold.kit.db import Exact, UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_numbers",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("series", sa.String(length=8), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_invoice_numbers_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "series", "year", name=op.f("pk_invoice_numbers")),
    )
    op.create_table(
        "test_clocks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("frozen_time", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_test_clocks_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_clocks")),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=True),
        sa.Column("number", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("paid_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("credited_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("tax_note", sa.String(length=500), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column(
            "rating",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "seller",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "buyer",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("finalize_at", UTCDateTime(), nullable=False),
        sa.Column("finalized_at", UTCDateTime(), nullable=True),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.Column("paid_at", UTCDateTime(), nullable=True),
        sa.Column("voided_at", UTCDateTime(), nullable=True),
        sa.Column("void_reason", sa.String(length=500), nullable=True),
        sa.Column("uncollectible_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_invoices_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_invoices_subscription_id_subscriptions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_invoices_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint(
            "subscription_id", "period_end", name="uq_invoices_subscription_period"
        ),
        sa.UniqueConstraint("tenant_id", "number", name="uq_invoices_number"),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoices_customer", ["customer_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_invoices_tenant_status", ["tenant_id", "status", "finalize_at"], unique=False
        )

    op.create_table(
        "pending_lines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("quantity", Exact(), nullable=False),
        sa.Column(
            "price",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("period_start", UTCDateTime(), nullable=True),
        sa.Column("period_end", UTCDateTime(), nullable=True),
        sa.Column("amount_precise", Exact(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_pending_lines_subscription_id_subscriptions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_pending_lines_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_lines")),
    )
    with op.batch_alter_table("pending_lines", schema=None) as batch_op:
        batch_op.create_index("ix_pending_lines_subscription", ["subscription_id"], unique=False)

    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("meter", sa.String(length=100), nullable=True),
        sa.Column("quantity", Exact(), nullable=False),
        sa.Column(
            "price",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("period_start", UTCDateTime(), nullable=True),
        sa.Column("period_end", UTCDateTime(), nullable=True),
        sa.Column("amount_precise", Exact(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_rate", Exact(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_name", sa.String(length=40), nullable=True),
        sa.Column("tax_included", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_lines_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_invoice_lines_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
        sa.UniqueConstraint(
            "invoice_id", "position", name=op.f("uq_invoice_lines_invoice_id_position")
        ),
    )
    op.create_table(
        "invoice_payments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("paid_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_payments_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_invoice_payments_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_payments")),
    )
    with op.batch_alter_table("invoice_payments", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_payments_invoice", ["invoice_id"], unique=False)

    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.String(length=48), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column(
            "lines",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_credit_notes_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("tenant_id", "number", name="uq_credit_notes_number"),
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index("ix_credit_notes_invoice", ["invoice_id"], unique=False)

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "address",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("country", sa.String(length=2), nullable=True))
        batch_op.add_column(sa.Column("region", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("tax_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("locale", sa.String(length=35), nullable=True))
        batch_op.add_column(sa.Column("test_clock_id", sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_customers_test_clock_id_test_clocks"),
            "test_clocks",
            ["test_clock_id"],
            ["id"],
        )

    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("interval", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("interval_count", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("billing_cycle", sa.String(length=12), nullable=True))
        batch_op.add_column(sa.Column("billing_anchor", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("current_period_start", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("quantity", Exact(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("trial_ends_at", UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "cancel_at_period_end", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(sa.Column("paused_at", UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "scheduled_change",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "discount",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.drop_index("uq_subscriptions_one_active")
        batch_op.create_index(
            "ix_subscriptions_period_end", ["current_period_ends_at"], unique=False
        )
        batch_op.create_index(
            "uq_subscriptions_one_live",
            ["tenant_id", "customer_id"],
            unique=True,
            sqlite_where=sa.text("status <> 'canceled'"),
            postgresql_where=sa.text("status <> 'canceled'"),
        )


def downgrade() -> None:
    # The previous release knows no paused state; a paused subscription grants nothing,
    # as a suspended one does not. Invoices and test clocks go with their tables.
    op.execute("UPDATE subscriptions SET status = 'suspended' WHERE status = 'paused'")
    op.execute("UPDATE customers SET test_clock_id = NULL")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_subscriptions_one_live",
            sqlite_where=sa.text("status <> 'canceled'"),
            postgresql_where=sa.text("status <> 'canceled'"),
        )
        batch_op.drop_index("ix_subscriptions_period_end")
        batch_op.create_index(
            "uq_subscriptions_one_active",
            ["tenant_id", "customer_id"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.drop_column("discount")
        batch_op.drop_column("scheduled_change")
        batch_op.drop_column("paused_at")
        batch_op.drop_column("cancel_at_period_end")
        batch_op.drop_column("trial_ends_at")
        batch_op.drop_column("quantity")
        batch_op.drop_column("current_period_start")
        batch_op.drop_column("billing_anchor")
        batch_op.drop_column("billing_cycle")
        batch_op.drop_column("interval_count")
        batch_op.drop_column("interval")
        batch_op.drop_column("currency")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_customers_test_clock_id_test_clocks"), type_="foreignkey"
        )
        batch_op.drop_column("test_clock_id")
        batch_op.drop_column("locale")
        batch_op.drop_column("tax_id")
        batch_op.drop_column("region")
        batch_op.drop_column("country")
        batch_op.drop_column("address")

    op.drop_table("credit_notes")
    op.drop_table("invoice_payments")
    op.drop_table("invoice_lines")
    with op.batch_alter_table("pending_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_lines_subscription")

    op.drop_table("pending_lines")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_tenant_status")
        batch_op.drop_index("ix_invoices_customer")

    op.drop_table("invoices")
    op.drop_table("test_clocks")
    op.drop_table("invoice_numbers")
