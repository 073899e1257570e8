"""Request and response models of the metering routes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field

from billfold.catalog.ai import MODEL
from billfold.catalog.schemas import MeterOut
from billfold.kit.schemas import QUANTITY, Body, Instant, Out, Storable


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


# A consume's usage properties (the usage event's, beside the amount); the check API takes
# the same, to price usage as consume would.
UsageProperties = dict[Annotated[str, Storable], Annotated[str, Storable] | int | bool]


class ConsumeIn(Body):
    customer: Annotated[str, Field(min_length=1, max_length=255), Storable]
    feature: Annotated[str, Field(min_length=1, max_length=100), Storable]
    amount: Annotated[Decimal, Field(gt=0, max_digits=30, decimal_places=12), QUANTITY] = Decimal(1)
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255), Storable]
    properties: UsageProperties = Field(
        default_factory=dict,
        max_length=20,
        description="the usage event's properties; `model` names the AI model, whose "
        "`credits` rate prices AI tokens paid from a wallet",
    )


class WalletPaymentOut(Out):
    """The overage's cost, paid from the customer's wallet (minor units of `unit`)."""

    unit: str
    rate: str  # minor units per unit of usage, a decimal string
    cost: int  # overage x rate, rounded once as the plans file says
    paid: int  # drawn from the wallet
    shortfall: int  # cost - paid: what the wallet could not pay (advisory, soft)
    balance: int  # the wallet's available balance after the draw
    reference: str  # the wallet spend's reference
    transfer_ids: list[str]  # its ledger transfers


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
    wallet: WalletPaymentOut | None = None  # a feature paid from a wallet, in overage


Count = Annotated[int, Field(ge=0, le=10**12)]


class ModelUsageIn(Body):
    model: Annotated[str, Field(pattern=MODEL.pattern)]
    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count | None = None  # default: prompt + completion
    duration_ms: Count | None = None


class UsageSummaryIn(Body):
    """The AI runtime's `chat.usage_summary`: one chat turn's tokens, per model."""

    event: Literal["chat.usage_summary"] = "chat.usage_summary"
    customer: Annotated[str, Field(min_length=1, max_length=255), Storable]
    chat_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
    workflow_id: Annotated[str, Field(min_length=1, max_length=100), Storable]
    sequence: Annotated[int, Field(ge=0, le=10**12)]
    timestamp: Instant | None = None
    correlation_id: Annotated[str, Field(min_length=1, max_length=255), Storable] | None = None
    models: Annotated[list[ModelUsageIn], Field(min_length=1, max_length=100)]


class SummaryOut(IngestOut):
    chat_id: str
    sequence: int


class AiLineOut(Out):
    calls: int
    prompt_tokens: int
    completion_tokens: int
    tokens: int
    duration_ms: int
    estimated_cost_minor: int  # priced calls only, rounded once (half to even)
    unpriced_tokens: int  # tokens of models the price table does not list


class WorkflowOut(AiLineOut):
    workflow: str


class ModelOut(AiLineOut):
    model: str


class AiUsageOut(Out):
    customer: str
    start: datetime
    end: datetime
    currency: str
    total: AiLineOut
    workflows: list[WorkflowOut]
    models: list[ModelOut]


class StoredEventOut(Out):
    """A usage event as Billfold stored it (`GET /v1/events`)."""

    id: str
    idempotency_key: str
    customer: str
    type: str
    service: str | None
    correlation_id: str | None
    timestamp: datetime  # when it happened, as reported (or when received, if not given)
    received_at: datetime
    properties: dict[str, Any]


class StoredEventsOut(Out):
    events: list[StoredEventOut]
    next_cursor: str | None  # pass as `cursor` for the next page; null on the last page
