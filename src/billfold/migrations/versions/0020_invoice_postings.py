"""Invoices on the ledger: when an invoice's finalization was posted, what of its
payments was given back, and each credit note's refund (docs/invoices.md, decision 0043).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 14:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billfold.kit.db import UTCDateTime

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "refunded_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("posted_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refund_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(sa.Column("refund_to", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("refund_paid_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("refund_reference", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.drop_column("refund_reference")
        batch_op.drop_column("refund_paid_at")
        batch_op.drop_column("refund_to")
        batch_op.drop_column("refund_minor")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("posted_at")
        batch_op.drop_column("refunded_minor")
