"""Imports every domain's tables so the shared metadata knows them all."""

from billfold.catalog.tables import (
    catalog_settings,
    catalogs,
    features,
    meters,
    plan_versions,
    plans,
)
from billfold.claims.tables import claim_batches, claim_codes, claim_redemptions
from billfold.customers.tables import customers, test_clocks
from billfold.grants.tables import grants
from billfold.invoicing.tables import (
    credit_notes,
    invoice_lines,
    invoice_numbers,
    invoice_payments,
    invoices,
    pending_lines,
)
from billfold.kit.tables import (
    change_feed,
    event_chain_heads,
    event_log,
    idempotency_keys,
    outbox,
    rate_limit_counters,
)
from billfold.ledger.tables import ledger_accounts, ledger_transfers
from billfold.metering.tables import ingest_dead_letters, quota_accounts, usage_events
from billfold.subscriptions.tables import subscriptions
from billfold.tenants.tables import api_keys, tenants
from billfold.wallets.tables import (
    wallet_holds,
    wallet_lots,
    wallet_spends,
    wallet_top_ups,
    wallets,
)

__all__ = [
    "api_keys",
    "catalog_settings",
    "catalogs",
    "change_feed",
    "claim_batches",
    "claim_codes",
    "claim_redemptions",
    "credit_notes",
    "customers",
    "event_chain_heads",
    "event_log",
    "features",
    "grants",
    "idempotency_keys",
    "ingest_dead_letters",
    "invoice_lines",
    "invoice_numbers",
    "invoice_payments",
    "invoices",
    "ledger_accounts",
    "ledger_transfers",
    "meters",
    "outbox",
    "pending_lines",
    "plan_versions",
    "plans",
    "quota_accounts",
    "rate_limit_counters",
    "subscriptions",
    "tenants",
    "test_clocks",
    "usage_events",
    "wallet_holds",
    "wallet_lots",
    "wallet_spends",
    "wallet_top_ups",
    "wallets",
]
