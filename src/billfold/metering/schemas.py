from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field

from billfold.kit.schemas import Body, Out


class OutcomeOut(Out):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    idempotency_key: str | None
    id: str | None = None
    code: str | None = None
    reason: str | None = None


class IngestOut(Out):
    accepted: int
    duplicates: int
    rejected: int
    # True with BILLFOLD_INGEST: `accepted` events are stored in the stream, and a worker
    # writes them; a key the store already holds is then dropped, still counted once.
    queued: bool = False
    results: list[OutcomeOut]


class MeterOut(Out):
    key: str
    event: str
    aggregation: str
    property: str | None
    filters: dict[str, list[str | int | bool]]
    group_by: list[str]
    description: str | None
    subtract: str | None = None  # events of this type count negatively (a gauge)


class BucketOut(Out):
    start: datetime
    end: datetime
    group: dict[str, Any]
    value: Any  # a decimal string ("1500", "0.25"); for `latest`, the value as reported
    events: int


class UsageOut(Out):
    customer: str
    meter: MeterOut
    start: datetime
    end: datetime
    window: str | None
    group_by: list[str]
    buckets: list[BucketOut]


class ConsumeIn(Body):
    customer: Annotated[str, Field(min_length=1, max_length=255)]
    feature: Annotated[str, Field(min_length=1, max_length=100)]
    amount: Annotated[Decimal, Field(gt=0, max_digits=30, decimal_places=12)] = Decimal(1)
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)]
    properties: dict[str, str | int | bool] = Field(default_factory=dict, max_length=20)


class ConsumeOut(Out):
    customer: str
    feature: str
    allowed: bool
    amount: str
    used: str
    remaining: str  # a decimal string, or "unlimited"
    limit: str
    overage: str  # the part of this amount that no quota bucket covered
    resets_at: datetime | None
    enforcement: str
    event_id: str
    replayed: bool
