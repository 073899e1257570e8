"""Test clocks: simulated time for test-mode customers (billing/clocks.py)."""

from sqlalchemy import Column, ForeignKey, String, Table

from billfold.kit.db import UTCDateTime, metadata

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
