"""Quota account versions: consume's unlocked path writes an account only if its version
is still the one it read (docs/decisions/0018).

On PostgreSQL a trigger adds 1 on every update, whoever writes: a process still running
the code of before this migration (during a rolling upgrade) moves the version too, and
so can never be overwritten by an unlocked write. SQLite has no unlocked path.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("quota_accounts") as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION billfold_quota_accounts_version() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                NEW.version := OLD.version + 1;
                RETURN NEW;
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER quota_accounts_version BEFORE UPDATE ON quota_accounts "
            "FOR EACH ROW EXECUTE FUNCTION billfold_quota_accounts_version()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER quota_accounts_version ON quota_accounts")
        op.execute("DROP FUNCTION billfold_quota_accounts_version()")
    with op.batch_alter_table("quota_accounts") as batch_op:
        batch_op.drop_column("version")
