"""The tables of kit's own machinery: idempotency keys, rate-limit counters, the event
log with its chain heads, and the outbox. Every domain writes through them; none owns
them."""

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

# One row per Idempotency-Key a client sent with a mutation: the request's fingerprint
# and, once the mutation committed, the answer to replay for every retry.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("response", JSONDocument, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

rate_limit_counters = Table(
    "rate_limit_counters",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("window_start", UTCDateTime, primary_key=True),
    Column("count", Integer, nullable=False),
)

# Append-only and hash-chained per tenant. No code path updates or deletes a row;
# on PostgreSQL a trigger refuses it, on SQLite a trigger does the same.
event_log = Table(
    "event_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("customer_id", String(40), nullable=True),
    Column("data", JSONDocument, nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(200), nullable=True),
    Column("actor_scope", String(16), nullable=True),
    Column("correlation_id", String(100), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("tenant_id", "seq"),
    Index("ix_event_log_customer", "tenant_id", "customer_id", "seq"),
    Index("ix_event_log_type", "tenant_id", "type", "seq"),
)

# The head of each tenant's chain. Appending locks this row, which orders appends. It
# says from which entry on the entries are keyed (null: none yet) and carries a MAC
# under the chain key (null: written before the chain was keyed, until `billfold audit
# seal`). Triggers refuse deleting a head and moving it back (decision 0025).
event_chain_heads = Table(
    "event_chain_heads",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("keyed_from", BigInteger, nullable=True),
    Column("mac", String(64), nullable=True),
)

# One row per event-log entry, written in the same transaction (kit/eventlog.py), for the
# workers that act on what happened (kit/outbox.py): pending until delivered, or parked
# after too many failed attempts. Delivered rows are deleted after a retention period.
outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("event_seq", BigInteger, nullable=False),  # the entry: (tenant_id, event_seq)
    Column("topic", String(64), nullable=False),  # the entry's type
    Column("created_at", UTCDateTime, nullable=False),
    Column("available_at", UTCDateTime, nullable=False),  # a retry waits until then
    Column("attempts", Integer, nullable=False, server_default="0"),  # failed ones
    Column("claim", String(32), nullable=True),  # the worker's claim, while it holds it
    Column("claimed_until", UTCDateTime, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("parked_at", UTCDateTime, nullable=True),
    Column("last_error", String(500), nullable=True),
    Index(
        "ix_outbox_pending",
        "available_at",
        "id",
        postgresql_where=text("delivered_at IS NULL AND parked_at IS NULL"),
        sqlite_where=text("delivered_at IS NULL AND parked_at IS NULL"),
    ),
    Index("ix_outbox_delivered", "delivered_at"),
)

# SQLite's change stream (kit/changes.py, decision 0031): every published topic, written in
# the publishing transaction and polled by every API process. PostgreSQL has the table too,
# so both schemas are the same, and never writes it (LISTEN/NOTIFY carries its changes).
change_feed = Table(
    "change_feed",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("at", UTCDateTime, server_default=func.current_timestamp(), nullable=False),
    sqlite_autoincrement=True,
)
