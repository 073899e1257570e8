from sqlalchemy import Column, ForeignKey, String, Table, UniqueConstraint

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

customers = Table(
    "customers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("name", String(200), nullable=True),
    Column("email", String(320), nullable=True),
    Column("metadata", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "external_id"),
)
