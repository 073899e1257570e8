from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

# A grant is one source of entitlements for a customer over [starts_at, ends_at).
# Either a whole plan version (plan_version_id) or one feature (feature_key + value).
# Grants are never edited: revoking one sets revoked_at, which ends it from then on,
# so the entitlements at any past moment can still be resolved.
grants = Table(
    "grants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("customer_id", String(40), ForeignKey("customers.id"), nullable=False),
    Column("source", String(40), nullable=False),
    Column("plan_version_id", String(40), ForeignKey("plan_versions.id"), nullable=True),
    Column("feature_key", String(100), nullable=True),
    Column("value", JSONDocument, nullable=True),
    Column("priority", Integer, nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("subscription_id", String(40), nullable=True),
    Column("metadata", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_grants_customer_id", "customer_id", "starts_at"),
    Index("ix_grants_subscription_id", "subscription_id"),
)
