"""The change feed's table: on SQLite, every published topic is also a row here, written
in the publishing transaction, which every API process polls to keep its caches correct
(kit/changes.py, decision 0031). PostgreSQL gets the table too, so both schemas are the
same, but never writes it: LISTEN/NOTIFY carries its changes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 03:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billfold.kit.db import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "change_feed",
        # INTEGER PRIMARY KEY AUTOINCREMENT on SQLite: a seq is never reused, even after the
        # newest rows are deleted, so a poller can tell a gap from a quiet spell.
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("at", UTCDateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_change_feed")),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("change_feed")
