from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    false,
    text,
)

from billfold.kit.db import Exact, JSONDocument, UTCDateTime, metadata
from billfold.subscriptions.status import SubscriptionStatus

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("customer_id", String(40), ForeignKey("customers.id"), nullable=False),
    Column("plan_id", String(40), ForeignKey("plans.id"), nullable=False),
    Column("plan_version_id", String(40), ForeignKey("plan_versions.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("current_period_ends_at", UTCDateTime, nullable=True),
    Column("canceled_at", UTCDateTime, nullable=True),
    Column("ends_at", UTCDateTime, nullable=True),
    Column("metadata", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Billing: a subscription on a priced plan version has a currency and a cycle; one
    # activated on a plan without prices has none and is never invoiced.
    Column("currency", String(3), nullable=True),
    Column("interval", String(8), nullable=True),
    Column("interval_count", Integer, nullable=True),
    Column("billing_cycle", String(12), nullable=True),  # calendar or anniversary
    Column("billing_anchor", UTCDateTime, nullable=True),  # periods count from here
    Column("current_period_start", UTCDateTime, nullable=True),
    Column("quantity", Exact, nullable=False, server_default="1"),
    Column("trial_ends_at", UTCDateTime, nullable=True),
    Column("cancel_at_period_end", Boolean, nullable=False, server_default=false()),
    Column("paused_at", UTCDateTime, nullable=True),
    # A change waiting for the period end (a downgrade, say): {plan_version_id, quantity}.
    Column("scheduled_change", JSONDocument, nullable=True),
    # A coupon as it was when applied, with what is left of it: {code, percent_off or
    # amount_off and currency, duration, periods_left} (subscriptions/charges.py).
    Column("discount", JSONDocument, nullable=True),
    # At most one live (not canceled) subscription per customer; concurrent creations race
    # on this.
    Index(
        "uq_subscriptions_one_live",
        "tenant_id",
        "customer_id",
        unique=True,
        sqlite_where=text(f"status <> '{SubscriptionStatus.CANCELED}'"),
        postgresql_where=text(f"status <> '{SubscriptionStatus.CANCELED}'"),
    ),
    # Period close finds the subscriptions whose period has ended.
    Index("ix_subscriptions_period_end", "current_period_ends_at"),
)
