"""The shapes `POST /v1/events` documents, for OpenAPI only.

The route reads its body itself (`events.read_body`, then `events.check` per event), so that
one bad event is rejected with a reason and its neighbours are kept: these models describe
a good event and are not used to parse one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from billfold.catalog.meters import EVENT_TYPE
from billfold.customers.service import EXTERNAL_ID
from billfold.metering.events import MAX_BATCH, MAX_KEY_LENGTH

Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH)]
Customer = Annotated[str, Field(pattern=EXTERNAL_ID.pattern)]
EventType = Annotated[str, Field(pattern=EVENT_TYPE.pattern, examples=["ai.tokens"])]
Short = Annotated[str, Field(min_length=1, max_length=255)]
Properties = Annotated[
    dict[str, Any],
    Field(description="what the event measures; a meter reads its value from here"),
]


class UsageEventIn(BaseModel):
    """A usage event as `application/json`."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: Key
    customer: Customer
    type: EventType
    service: Short | None = None
    correlation_id: Short | None = None
    timestamp: datetime | None = Field(
        default=None, description="an instant with a time zone; default: when received"
    )
    properties: Properties = Field(default_factory=dict)


class CloudEventIn(BaseModel):
    """A usage event as a structured CloudEvent 1.0 (`id`, `source`, `subject`, `time`,
    `data`); the `correlationid` extension is the correlation id."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: Key
    source: Short
    subject: Customer
    type: EventType
    time: datetime | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    correlationid: Short | None = None
    data: Properties = Field(default_factory=dict)


UsageEventsIn = Annotated[
    UsageEventIn | Annotated[list[UsageEventIn], Field(min_length=1, max_length=MAX_BATCH)],
    Field(description="one event, or a batch of them"),
]
CloudEventsIn = Annotated[list[CloudEventIn], Field(min_length=1, max_length=MAX_BATCH)]
