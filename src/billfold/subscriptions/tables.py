from sqlalchemy import Column, ForeignKey, Index, String, Table, text

from billfold.kit.db import JSONDocument, UTCDateTime, metadata
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
    # At most one active subscription per customer; concurrent activations race on this.
    Index(
        "uq_subscriptions_one_active",
        "tenant_id",
        "customer_id",
        unique=True,
        sqlite_where=text(f"status = '{SubscriptionStatus.ACTIVE}'"),
        postgresql_where=text(f"status = '{SubscriptionStatus.ACTIVE}'"),
    ),
)
