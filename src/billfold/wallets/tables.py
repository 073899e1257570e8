"""Wallets: prepaid credit per (tenant, customer, unit), held in lots.

A lot is one top-up, grant, claim or promotion, with its own priority and expiry, and one
ledger account of its own (`wallet:{lot_id}`, a liability that cannot be overdrawn). The
money is in the ledger; these tables say whose lots they are, in which order they are
drawn, and what each spend and hold took from them (docs/wallets.md, decision 0041).
"""

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

# One row per (tenant, customer, unit). Its row lock serializes the wallet's writers
# (spends, holds, credits, expiry), so lots are drawn in order and thresholds fire once.
wallets = Table(
    "wallets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("customer_id", String(40), ForeignKey("customers.id"), nullable=False),
    Column("unit", String(32), nullable=False),
    Column("low_balance", BigInteger, nullable=True),  # the threshold, minor units
    Column("alert", String(16), nullable=False),  # ok, low, exhausted: the last crossing
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "customer_id", "unit", name="uq_wallets_customer_unit"),
)

# One row per lot; its balance is its ledger account's. (tenant, source, reference) is
# the credit's idempotency key.
wallet_lots = Table(
    "wallet_lots",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("wallet_id", String(40), ForeignKey("wallets.id"), nullable=False),
    Column("account_id", String(40), ForeignKey("ledger_accounts.id"), nullable=False),
    Column("source", String(16), nullable=False),  # payment, grant, claim, promotion, ...
    Column("reference", String(100), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("priority", Integer, nullable=False),  # lower is drawn first
    Column("expires_at", UTCDateTime, nullable=True),
    Column("funded_by", String(100), nullable=False),  # the ledger account code debited
    Column("transfer_id", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "source", "reference", name="uq_wallet_lots_reference"),
    Index("ix_wallet_lots_order", "wallet_id", "priority", "expires_at", "created_at"),
    Index("ix_wallet_lots_expiry", "tenant_id", "expires_at"),
)

# What each spend drew, so that a retry of its reference returns it with no second effect.
wallet_spends = Table(
    "wallet_spends",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("wallet_id", String(40), ForeignKey("wallets.id"), nullable=False),
    Column("reference", String(100), nullable=False),
    Column("requested", BigInteger, nullable=False),
    Column("drawn", BigInteger, nullable=False),
    Column("to_account", String(100), nullable=False),
    Column("allow_partial", Integer, nullable=False),  # 0 or 1
    Column("legs", JSONDocument, nullable=False),  # [{lot_id, transfer_id, amount}]
    Column("balance_after", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "reference", name="uq_wallet_spends_reference"),
)

# A hold: pending ledger transfers from the wallet's lots, settled, released or expired
# once. `hold_id` is the client's and its idempotency key.
wallet_holds = Table(
    "wallet_holds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("wallet_id", String(40), ForeignKey("wallets.id"), nullable=False),
    Column("hold_id", String(80), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("to_account", String(100), nullable=False),
    Column("timeout_s", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),  # held, settled, released, expired
    Column("legs", JSONDocument, nullable=False),  # [{lot_id, transfer_id, amount}]
    Column("settled_amount", BigInteger, nullable=True),
    Column("resolution", JSONDocument, nullable=True),  # the settle's or release's transfers
    Column("created_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    UniqueConstraint("tenant_id", "hold_id", name="uq_wallet_holds_hold_id"),
    Index("ix_wallet_holds_open", "tenant_id", "status", "expires_at"),
)

# A top-up paid by a payment: pending until the payment succeeds (then it becomes a lot)
# or fails. Other top-ups (grants, claims) become lots at once.
wallet_top_ups = Table(
    "wallet_top_ups",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("wallet_id", String(40), ForeignKey("wallets.id"), nullable=False),
    Column("source", String(16), nullable=False),  # payment, grant, promotion
    Column("reference", String(100), nullable=False),  # the client's id
    Column("amount", BigInteger, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("status", String(16), nullable=False),  # pending, paid, failed
    Column("lot_id", String(40), nullable=True),
    Column("payment_reference", String(100), nullable=True),
    Column("failure", String(200), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    UniqueConstraint("tenant_id", "reference", name="uq_wallet_top_ups_reference"),
)
