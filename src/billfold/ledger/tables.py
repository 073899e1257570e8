"""Ledger accounts, with their balances, and the append-only transfers that move them.

Amounts are BIGINT minor units of the account's unit (an ISO 4217 currency or a credit
unit such as `credits`). An account's four balances are kept beside the transfers, in the
same transaction; `billfold ledger verify` recomputes them from the transfers.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    text,
)

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("code", String(100), nullable=False),
    Column("type", String(16), nullable=False),  # asset, liability, revenue, expense, equity
    Column("unit", String(32), nullable=False),  # USD, EUR, ..., or a credit unit: credits
    # debits_must_not_exceed_credits, credits_must_not_exceed_debits, or none
    Column("rule", String(40), nullable=True),
    Column("debits_posted", BigInteger, nullable=False, server_default=text("0")),
    Column("credits_posted", BigInteger, nullable=False, server_default=text("0")),
    Column("debits_pending", BigInteger, nullable=False, server_default=text("0")),
    Column("credits_pending", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "code", name="uq_ledger_accounts_code"),
)

# Append-only: triggers refuse UPDATE and DELETE on both backends (migration 0017). The
# id is the client's and its idempotency key, per tenant. A transfer that resolves a
# pending one names it in `pending_id`, and the unique key lets each pending transfer be
# resolved (posted, voided or expired) once.
ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("id", String(128), nullable=False),
    Column("kind", String(8), nullable=False),  # posted, pending, post, void, expire
    Column("debit_account_id", String(40), ForeignKey("ledger_accounts.id"), nullable=False),
    Column("credit_account_id", String(40), ForeignKey("ledger_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("unit", String(32), nullable=False),
    Column("pending_id", String(128), nullable=True),
    Column("timeout_s", BigInteger, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("code", String(100), nullable=False),
    Column("metadata", JSONDocument, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id", name="pk_ledger_transfers"),
    UniqueConstraint("tenant_id", "pending_id", name="uq_ledger_transfers_resolution"),
    ForeignKeyConstraint(
        ["tenant_id", "pending_id"],
        ["ledger_transfers.tenant_id", "ledger_transfers.id"],
        name="fk_ledger_transfers_pending",
    ),
    Index("ix_ledger_transfers_debit", "debit_account_id"),
    Index("ix_ledger_transfers_credit", "credit_account_id"),
    Index("ix_ledger_transfers_expiry", "tenant_id", "expires_at"),
)
