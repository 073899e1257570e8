from sqlalchemy import Column, Integer, String, Table

from billfold.kit.db import UTCDateTime, metadata

rate_limit_counters = Table(
    "rate_limit_counters",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("window_start", UTCDateTime, primary_key=True),
    Column("count", Integer, nullable=False),
)
