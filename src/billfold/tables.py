"""Imports every domain's tables so the shared metadata knows them all."""

from billfold.audit.tables import event_chain_heads, event_log
from billfold.catalog.tables import features, plan_versions, plans
from billfold.claims.tables import claim_batches, claim_codes, claim_redemptions
from billfold.customers.tables import customers
from billfold.entitlements.tables import grants
from billfold.kit.idempotency_tables import idempotency_keys
from billfold.kit.ratelimit_tables import rate_limit_counters
from billfold.subscriptions.tables import subscriptions
from billfold.tenants.tables import api_keys, tenants

__all__ = [
    "api_keys",
    "claim_batches",
    "claim_codes",
    "claim_redemptions",
    "customers",
    "event_chain_heads",
    "event_log",
    "features",
    "grants",
    "idempotency_keys",
    "plan_versions",
    "plans",
    "rate_limit_counters",
    "subscriptions",
    "tenants",
]
