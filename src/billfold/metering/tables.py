from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

# A JSON document whose None is SQL NULL (not JSON `null`) on both backends.
_OUTCOME = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

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
    # What the consume that stored the event answered beyond the usage, so that a retry
    # of its key answers the same (decision 0047): {"overage": "10", "wallet": {...}},
    # the payment as the answer's `wallet` said it. NULL for a consume without overage,
    # for reported events, and for events stored before migration 0021.
    Column("outcome", _OUTCOME, nullable=True),
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

# What `billfold worker ingest` could not store, parked for an operator instead of being
# retried forever (decision 0024): one usage event the database or the checks refused,
# or one message that does not even decode. `billfold worker dead-letters` lists, replays
# and drops them. `raw` is the event as ASCII JSON (its escapes keep a NUL or a lone
# surrogate storable), or a message's bytes in base64. The same thing parked again (a
# redelivery, a replay that fails) counts another attempt on its row.
ingest_dead_letters = Table(
    "ingest_dead_letters",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("fingerprint", String(64), nullable=False),  # SHA-256 of kind, tenant and raw
    Column("kind", String(16), nullable=False),  # "event" or "message"
    Column("tenant_id", String(40), nullable=True),  # none when the message did not decode
    Column("message_id", String(300), nullable=True),  # Nats-Msg-Id, or the stream sequence
    Column("idempotency_key", String(255), nullable=True),  # escaped, for reading
    Column("correlation_id", String(255), nullable=True),
    Column("received_at", UTCDateTime, nullable=True),  # the API's receipt: replay's "now"
    Column("raw", Text, nullable=False),
    Column("error", String(500), nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    UniqueConstraint("fingerprint", name="uq_ingest_dead_letters_fingerprint"),
)

# Gauges kept current (metering/gauges.py, docs/decisions/0030): the meters that feed limits,
# each with the definition its kept values were computed under...
gauge_meters = Table(
    "gauge_meters",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("meter_key", String(100), primary_key=True),
    Column("definition", JSONDocument, nullable=False),  # Meter.as_json()
    Column("catalog_revision", BigInteger, nullable=False),  # the catalog that set it
)

# ...and each customer's value through such a meter over all of its events. A customer has a
# row once a check has read the meter for it; from then on every ingest that stores one of
# its events adds the event here, in the same transaction. NULL: an event held a value the
# meter cannot add (the check then aggregates at read time, which refuses it).
gauge_values = Table(
    "gauge_values",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("meter_key", String(100), primary_key=True),
    Column("customer", String(255), primary_key=True),
    Column("value", String(100), nullable=True),  # an exact decimal
)
