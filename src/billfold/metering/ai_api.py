"""Routes: the AI runtime reports `chat.usage_summary`; anyone may read tokens and cost."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime, Field
from pydantic_core import to_json

from billfold.customers import service as customers
from billfold.deps import ReadCall, ReportCall
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.http import json_body_schema, json_response, read_json
from billfold.kit.schemas import Body, Instant, Out
from billfold.metering import ai, events, repository, service
from billfold.metering.api import accept
from billfold.metering.model import json_value
from billfold.metering.schemas import IngestOut

router = APIRouter(tags=["metering"])

Count = Annotated[int, Field(ge=0, le=10**12)]


class ModelUsageIn(Body):
    model: Annotated[str, Field(pattern=ai.MODEL.pattern)]
    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count | None = None  # default: prompt + completion
    duration_ms: Count | None = None


class UsageSummaryIn(Body):
    """The AI runtime's `chat.usage_summary`: one chat turn's tokens, per model."""

    event: Literal["chat.usage_summary"] = "chat.usage_summary"
    customer: Annotated[str, Field(min_length=1, max_length=255)]
    chat_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
    workflow_id: Annotated[str, Field(min_length=1, max_length=100)]
    sequence: Annotated[int, Field(ge=0, le=10**12)]
    timestamp: Instant | None = None
    correlation_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    models: Annotated[list[ModelUsageIn], Field(min_length=1, max_length=100)]


class SummaryOut(IngestOut):
    chat_id: str
    sequence: int


@router.post(
    "/v1/integrations/ai/usage-summary",
    response_model=SummaryOut,
    openapi_extra=json_body_schema(UsageSummaryIn),
)
async def usage_summary(request: Request, call: ReportCall) -> Response:
    """Turn a `chat.usage_summary` into usage events, one per model.

    Idempotent on chat id, sequence and model: a summary sent again counts once. The
    events draw on quotas like any others (`ai.tokens`)."""
    body = await read_json(request, UsageSummaryIn)
    customers.check_external_id(body.customer, pointer="#/customer")
    catalog = await call.catalog()
    payload = body.model_dump(mode="json")
    try:
        items = ai.events_of(payload, catalog.ai)
    except ai.SummaryError as error:
        raise InvalidInput(
            str(error), errors=[FieldError(str(error), pointer=error.pointer)]
        ) from None
    answer = await accept(call, items, events.JSON_TYPE)
    summary = {"chat_id": body.chat_id, "sequence": body.sequence, **answer}
    return Response(to_json(summary), media_type=events.JSON_TYPE)


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


def _line(line: ai.Line) -> dict[str, int]:
    return {
        "calls": line.calls,
        "prompt_tokens": int(line.prompt_tokens),
        "completion_tokens": int(line.completion_tokens),
        "tokens": int(line.tokens),
        "duration_ms": int(line.duration_ms),
        "estimated_cost_minor": ai.round_minor(line.cost),
        "unpriced_tokens": int(line.unpriced_tokens),
    }


_READ = ("model", "workflow", "prompt_tokens", "completion_tokens", "tokens", "duration_ms")


@router.get("/v1/customers/{external_id}/usage/ai", response_model=AiUsageOut)
async def ai_usage(
    external_id: Annotated[str, Path(min_length=1, max_length=255)],
    call: ReadCall,
    start: Annotated[
        AwareDatetime | None, Query(alias="from", description="default: this month's start")
    ] = None,
    end: Annotated[
        AwareDatetime | None, Query(alias="to", description="default: next month's start")
    ] = None,
) -> Response:
    """Tokens and estimated cost per workflow and per model over [from, to).

    Costs come from the plans file's `ai.models` price table, in minor units of
    `ai.currency`; each line is rounded once, half to even."""
    customers.check_external_id(external_id)
    start_at, end_at = service.reporting_period(call.ctx.now, start, end)
    catalog = await call.catalog()
    records = await repository.events_of(
        call.session, call.ctx.tenant_id, external_id, [catalog.ai.event], start_at, end_at, _READ
    )
    rows = (
        (record[0], {name: json_value(record[i + 2]) for i, name in enumerate(_READ)})
        for record in records
    )
    found = ai.report(catalog.ai, rows)
    return json_response(
        AiUsageOut(
            customer=external_id,
            start=start_at,
            end=end_at,
            currency=catalog.ai.currency,
            total=AiLineOut(**_line(found.total)),
            workflows=[
                WorkflowOut(workflow=name, **_line(line))
                for name, line in sorted(found.by_workflow.items())
            ],
            models=[
                ModelOut(model=name, **_line(line)) for name, line in sorted(found.by_model.items())
            ],
        )
    )
