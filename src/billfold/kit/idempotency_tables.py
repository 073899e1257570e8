from sqlalchemy import Column, ForeignKey, Integer, String, Table

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
