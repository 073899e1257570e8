"""Consume outcomes: the usage event a consume stores keeps what its answer said beyond
the usage itself (the overage, and the wallet payment that paid it), so that a retry of
its idempotency key is answered with the same facts (docs/quotas.md, decision 0047).

The column is nullable: a consume without overage stores none, and neither do reported
events or events stored before it. Adding a nullable column rewrites no rows on either
backend, and the append-only triggers stay as they are (so no batch rebuild on SQLite).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-08 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "usage_events",
        sa.Column(
            "outcome", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
    )


def downgrade() -> None:
    # Plain SQL on both backends (SQLite 3.35 and later): a batch rebuild on SQLite would
    # copy every event and drop the append-only triggers.
    op.execute("ALTER TABLE usage_events DROP COLUMN outcome")
