"""Catalog revisions move from `tenants.catalog_revision` to a table of the catalog's own,
so the catalog package needs nothing of the tenants package (docs/decisions/0020).

Processes of the previous version read the dropped column: stop them all before this
migration runs (docs/operating.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billfold.kit.db import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalogs",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_catalogs_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_catalogs")),
    )
    op.execute(
        "INSERT INTO catalogs (tenant_id, revision, updated_at) "
        "SELECT id, catalog_revision, created_at FROM tenants WHERE catalog_revision > 0"
    )
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.drop_column("catalog_revision")


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.add_column(
            sa.Column("catalog_revision", sa.Integer(), server_default="0", nullable=False)
        )
    op.execute(
        "UPDATE tenants SET catalog_revision = "
        "(SELECT revision FROM catalogs WHERE catalogs.tenant_id = tenants.id) "
        "WHERE id IN (SELECT tenant_id FROM catalogs)"
    )
    op.drop_table("catalogs")
