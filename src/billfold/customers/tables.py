from sqlalchemy import Column, ForeignKey, String, Table, UniqueConstraint

from billfold.kit.db import JSONDocument, UTCDateTime, metadata

# Test clocks: simulated time for test-mode customers (customers/clocks.py).
test_clocks = Table(
    "test_clocks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=True),
    Column("frozen_time", UTCDateTime, nullable=False),  # the clock's now
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("name", String(200), nullable=True),
    Column("email", String(320), nullable=True),
    Column("metadata", JSONDocument, nullable=False),
    # Billing details, as invoices show them and taxes read them.
    Column("address", JSONDocument, nullable=True),  # lines, as the customer writes them
    Column("country", String(2), nullable=True),  # ISO 3166-1 alpha-2
    Column("region", String(3), nullable=True),  # ISO 3166-2 subdivision, e.g. CA
    Column("tax_id", String(64), nullable=True),
    Column("locale", String(35), nullable=True),  # BCP 47, e.g. de-DE
    # A test-mode customer on a simulated clock (billing/clocks.py); never a live one.
    Column("test_clock_id", String(40), ForeignKey("test_clocks.id"), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "external_id"),
)
