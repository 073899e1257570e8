"""The catalog's tables: what the plans files applied so far declare."""

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
    true,
)

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

# One row per tenant that has applied a plans file: its catalog revision, which moves on
# with every apply that changes something, so cached catalogs know they are stale. An apply
# locks this row, so two applies of one tenant run one after the other.
catalogs = Table(
    "catalogs",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

features = Table(
    "features",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("key", String(100), nullable=False),
    Column("type", String(16), nullable=False),
    Column("description", String(500), nullable=True),
    # Type-specific settings; room for `metered` (meter, reset period, enforcement).
    Column("config", JSONDocument, nullable=False),
    Column("archived_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "key"),
)

plans = Table(
    "plans",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("key", String(100), nullable=False),
    Column("is_default", Boolean, nullable=False),
    # Whether customers are offered the plan (upgrade hints); a plan-file setting like
    # `default`, so it changes in place and makes no new version.
    Column("for_sale", Boolean, nullable=False, server_default=true()),
    Column("current_version_id", String(40), nullable=True),
    Column("archived_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "key"),
)

plan_versions = Table(
    "plan_versions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("plan_id", String(40), ForeignKey("plans.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", String(500), nullable=True),
    # feature key -> value, exactly as validated from the plans file; never updated.
    Column("features", JSONDocument, nullable=False),
    # The version's prices (`PlanPrice.as_json`, one per currency and interval); never
    # updated: a price change is a new version. Empty: the plan is not billed.
    Column("prices", JSONDocument, nullable=False, server_default="[]"),
    Column("digest", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("plan_id", "version"),
)

# Meters as declared in the plans file. A meter reads raw usage events at query time, so
# its definition may change; the change is in the diff and the event log.
meters = Table(
    "meters",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("key", String(100), nullable=False),
    Column("definition", JSONDocument, nullable=False),
    Column("archived_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "key"),
)

# Sections of the plans file that are one document per tenant, such as `ai` (the model
# price table), by section name.
catalog_settings = Table(
    "catalog_settings",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("name", String(40), primary_key=True),
    Column("document", JSONDocument, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
