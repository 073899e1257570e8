"""Consume digests: the usage event a consume stores keeps a digest of the consume, so
that its idempotency key sent again with another body is refused instead of replayed
(docs/decisions/0023).

The column is nullable: reported events have none (a key of theirs sent again is compared
with the stored event itself), nor have events stored before it. Adding a nullable column
rewrites no rows on either backend, and the append-only triggers stay as they are (so no
batch rebuild on SQLite).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usage_events", sa.Column("body_digest", sa.String(length=32), nullable=True))


def downgrade() -> None:
    # Plain SQL on both backends (SQLite 3.35 and later): a batch rebuild on SQLite would
    # copy every event and drop the append-only triggers.
    op.execute("ALTER TABLE usage_events DROP COLUMN body_digest")
