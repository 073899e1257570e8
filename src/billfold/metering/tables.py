from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
    text,
)

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

# Usage as the product services reported it. Append-only: a trigger refuses UPDATE and
# DELETE on both backends, and a correction is a new event. The unique key makes an
# event count once however often, and however concurrently, it is retried.
usage_events = Table(
    "usage_events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("customer", String(255), nullable=False),  # the product's own id (external id)
    Column("type", String(100), nullable=False),
    Column("service", String(255), nullable=True),
    Column("correlation_id", String(255), nullable=True),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("properties", JSONDocument, nullable=False),
    # What the consume that stored the event asked for, as a digest: its key sent again
    # with another body is refused, not replayed. NULL for reported events (a repeated key
    # is compared with the stored event itself) and for events stored before migration
    # 0009 (docs/decisions/0023).
    Column("body_digest", String(32), nullable=True),
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_usage_events_key"),
    Index("ix_usage_events_customer", "tenant_id", "customer", "type", "occurred_at"),
)

# What each customer has drawn from each quota bucket of a metered feature (see
# metering/quotas/buckets.py). Usage is drawn either under the row's lock, or (consume's unlocked
# path) from a read whose write applies only if `version` has not moved since: either way,
# concurrent draws on one customer's quota never overspend (docs/decisions/0018).
quota_accounts = Table(
    "quota_accounts",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("customer", String(255), primary_key=True),
    Column("feature_key", String(100), primary_key=True),
    # {"drawn": {bucket key: decimal string}, "ends": {bucket key: ISO instant}}
    Column("state", JSONDocument, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", BigInteger, nullable=False, server_default=text("0")),  # +1 per write
)
