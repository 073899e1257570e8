"""Settlement's tables: split tables (one row per version), settled payments, and payout
batches with their lines. Amounts are BIGINT minor units; the money itself moves in the
ledger, by transfers whose ids these rows keep."""

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from billfold.kit.db import Exact, JSONDocument, UTCDateTime, metadata

# A split table's versions, never updated: a change is a new version, as plans are.
split_tables = Table(
    "split_tables",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("app_id", String(48), nullable=False),
    Column("version", Integer, nullable=False),
    # [{"payee": "ada", "role": "creator", "percent": "70"}, ...], summing to 100
    Column("shares", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant_id", "app_id", "version", name="pk_split_tables"),
)

# One row per settled payment; its id is the client's and its idempotency key.
settlements = Table(
    "settlements",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("id", String(48), nullable=False),
    Column("type", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("app_id", String(48), nullable=True),
    Column("payer", String(255), nullable=True),
    Column("reference", String(255), nullable=True),
    Column("mode", String(16), nullable=False),  # self-hosted or platform, when settled
    Column("fee_percent", Exact, nullable=True),  # none: no fee applied (self-hosted)
    Column("fee", BigInteger, nullable=False),
    Column("split_version", Integer, nullable=True),
    # [{"role": "fee", "account": "platform_fee:USD", "amount": 35, "payee": null}, ...]
    Column("parts", JSONDocument, nullable=False),
    Column("transfer_ids", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id", name="pk_settlements"),
)

# One payout batch per tenant and period: the unique key is what makes a second run in
# the same period create nothing.
payout_batches = Table(
    "payout_batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("period", String(32), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "period", name="uq_payout_batches_period"),
)

payout_lines = Table(
    "payout_lines",
    metadata,
    Column("batch_id", String(40), nullable=False),
    Column("payee", String(48), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("transfer_id", String(128), nullable=False),
    PrimaryKeyConstraint("batch_id", "payee", "currency", name="pk_payout_lines"),
    ForeignKeyConstraint(["batch_id"], ["payout_batches.id"], name="fk_payout_lines_batch"),
)

# One row per tenant, locked by each payout run: runs of one tenant take turns, so two
# never read the same payable balance and pay it twice.
payout_heads = Table(
    "payout_heads",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("last_batch_id", String(40), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)
