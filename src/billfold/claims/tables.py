from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

claim_batches = Table(
    "claim_batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    # What a redemption grants: a plan, or one feature and its value (JSON, as grants
    # store it); exactly one of the two.
    Column("plan_id", String(40), ForeignKey("plans.id"), nullable=True),
    Column("feature_key", String(100), nullable=True),
    Column("feature_value", JSONDocument, nullable=True),
    Column("source", String(40), nullable=False),
    # Days of entitlement a redemption grants; NULL means lifetime.
    Column("duration_days", Integer, nullable=True),
    Column("max_redemptions", Integer, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("code_count", Integer, nullable=False),
    Column("metadata", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Wallet credit a redemption adds (docs/wallets.md): unit and amount, or neither.
    Column("wallet_unit", String(32), nullable=True),
    Column("wallet_amount", BigInteger, nullable=True),
    Column("wallet_expires_in_days", Integer, nullable=True),
    Column("wallet_priority", Integer, nullable=True),
    # A plan or a feature (not both), or wallet credit, or one of those and wallet credit.
    CheckConstraint(
        "(plan_id IS NULL OR feature_key IS NULL) AND "
        "(plan_id IS NOT NULL OR feature_key IS NOT NULL OR wallet_unit IS NOT NULL)",
        name="grants_something",
    ),
    CheckConstraint("(wallet_unit IS NULL) = (wallet_amount IS NULL)", name="wallet_credit"),
)

claim_codes = Table(
    "claim_codes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("batch_id", String(40), ForeignKey("claim_batches.id"), nullable=False),
    # HMAC-SHA256 of the normalised code under the deployment's secret key.
    Column("code_hash", String(64), nullable=False),
    Column("redemption_count", Integer, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "code_hash"),
)

claim_redemptions = Table(
    "claim_redemptions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("code_id", String(40), ForeignKey("claim_codes.id"), nullable=False),
    Column("customer_id", String(40), ForeignKey("customers.id"), nullable=False),
    Column("grant_id", String(40), ForeignKey("grants.id"), nullable=True),
    Column("lot_id", String(40), ForeignKey("wallet_lots.id"), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("code_id", "customer_id"),
)
