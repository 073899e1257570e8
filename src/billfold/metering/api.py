"""Routes: report usage events (and the AI runtime's usage summaries), consume quota, and
read a customer's usage through a meter or as an AI cost report."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic_core import to_json

from billfold.catalog.schemas import MeterOut
from billfold.http.bodies import (
    UnsupportedMediaType,
    body_of,
    json_body_schema,
    json_response,
    read_json,
    require_utf8,
)
from billfold.http.calls import Call, ReadCall, ReportCall, SelfCommittingReportCall, short_path
from billfold.http.openapi import schema_of
from billfold.kit.errors import BillfoldError
from billfold.kit.money import round_minor
from billfold.kit.schemas import MAX_PAGE_SIZE, Instant, Text
from billfold.metering import ai, events, history, ingest, usage
from billfold.metering.aggregation import exact
from billfold.metering.deps import Metering
from billfold.metering.event_schemas import CloudEventIn, CloudEventsIn, UsageEventsIn
from billfold.metering.quotas.consume import Consumed, prepare_consume
from billfold.metering.quotas.format import show
from billfold.metering.schemas import (
    AiLineOut,
    AiUsageOut,
    BucketOut,
    ConsumeIn,
    ConsumeOut,
    IngestOut,
    ModelOut,
    StoredEventOut,
    StoredEventsOut,
    SummaryOut,
    UsageOut,
    UsageSummaryIn,
    WorkflowOut,
)
from billfold.metering.usage import Window
from billfold.wallets.records import InsufficientBalance

router = APIRouter(tags=["metering"])

EVENTS_PATH = "/v1/events"
ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
# A usage report's period, [from, to): by default the calendar month of the request.
From = Annotated[Instant | None, Query(alias="from", description="default: this month's start")]
To = Annotated[Instant | None, Query(alias="to", description="default: next month's start")]


class UnreadableEvents(BillfoldError):
    status = 400
    code = "unreadable_events"
    title = "The body is not a usage event or a batch of them"


def _example(media_type: str, schema: Any, value: Any) -> dict[str, Any]:
    return {media_type: {"schema": schema_of(schema), "example": value}}


_SINGLE = {
    "idempotency_key": "chat-42:7",
    "customer": "ada",
    "type": "ai.tokens",
    "service": "ai-runtime",
    "correlation_id": "req-1",
    "timestamp": "2026-06-01T12:00:00Z",
    "properties": {"tokens": 1200, "model": "gpt-4o"},
}
_CLOUDEVENT = {
    "specversion": "1.0",
    "id": "chat-42:7",
    "source": "ai-runtime",
    "subject": "ada",
    "type": "ai.tokens",
    "time": "2026-06-01T12:00:00Z",
    "data": {"tokens": 1200, "model": "gpt-4o"},
}


@router.post(
    EVENTS_PATH,
    operation_id="reportUsage",
    response_model=IngestOut,
    responses={
        400: {
            "description": "`unreadable_events`: the body is not a usage event or a batch of "
            "them (not strict UTF-8 JSON, empty, or over 10,000 events)"
        }
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                **_example(events.JSON_TYPE, UsageEventsIn, [_SINGLE]),
                **_example(events.CLOUDEVENT_TYPE, CloudEventIn, _CLOUDEVENT),
                **_example(events.CLOUDEVENTS_BATCH_TYPE, CloudEventsIn, [_CLOUDEVENT]),
            },
        }
    },
)
async def report_usage(request: Request, call: ReportCall) -> Response:
    """Report usage: one event or a batch of up to 10,000, JSON or CloudEvents 1.0.

    Each event is answered on its own: `accepted`, `duplicate` (its idempotency key was
    seen before; it counts once) or `rejected` with a code and a reason. The answer is
    200 when any event was accepted or was a duplicate, and 422 `events_rejected` (with
    the same `results`) when every one was rejected."""
    declared, _, parameters = request.headers.get("content-type", "").partition(";")
    media_type = declared.strip().lower()
    if media_type not in events.MEDIA_TYPES:
        raise UnsupportedMediaType(f"send one of {', '.join(events.MEDIA_TYPES)}")
    require_utf8(parameters)  # read as UTF-8, like every JSON body (decision 0022)
    try:
        items = events.read_body(await body_of(request), media_type)
    except events.BodyError as error:
        raise UnreadableEvents(str(error)) from None
    return await accept_events(call, items, media_type)


async def accept_events(
    call: Call, items: list[Any], media_type: str, *, echo: dict[str, Any] | None = None
) -> Response:
    """Usage events in, whichever route brought them: stored, or queued on the stream.
    `echo` leads the answer (the AI summary route names its chat and sequence)."""
    metering = call.collaborator(Metering)
    answer, overages = await ingest.accept(
        call.session,
        call.ctx,
        await call.catalog(),
        items,
        media_type,
        windows=metering.windows,
        publisher=metering.publisher,
    )
    for feature, overage in overages.items():
        metering.overage.labels(feature, "reported").inc(float(overage))
    return Response(to_json({**(echo or {}), **answer}), media_type=events.JSON_TYPE)


@router.get(EVENTS_PATH, operation_id="listUsageEvents", response_model=StoredEventsOut)
async def list_events(
    call: ReadCall,
    customer: Annotated[Text | None, Query(max_length=255)] = None,
    type: Annotated[
        list[Text] | None, Query(max_length=20, description="one or more event types")
    ] = None,
    start: Annotated[
        Instant | None, Query(alias="from", description="events at or after this instant")
    ] = None,
    end: Annotated[
        Instant | None, Query(alias="to", description="events before this instant")
    ] = None,
    correlation_id: Annotated[Text | None, Query(max_length=255)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> Response:
    """The usage events stored for the tenant, as stored, ordered by timestamp then id;
    filtered by customer, type, time ([from, to), on the event's timestamp) and
    correlation id; cursor-paginated."""
    found = await history.page(
        call.session,
        call.ctx.tenant_id,
        customer=customer,
        types=type or [],
        start=start,
        end=end,
        correlation_id=correlation_id,
        cursor=cursor,
        limit=limit,
    )
    return json_response(
        StoredEventsOut(
            events=[StoredEventOut(**vars(event)) for event in found.events],
            next_cursor=found.next_cursor,
        )
    )


@router.get(
    "/v1/customers/{external_id}/usage",
    operation_id="getUsage",
    responses={
        404: {"description": "`meter_not_found`"},
        409: {"description": "`meter_value_not_a_number`"},
    },
    response_model=UsageOut,
)
async def customer_usage(
    external_id: ExternalId,
    call: ReadCall,
    meter: Annotated[Text, Query(max_length=100, description="a meter of the plans file")],
    start: From = None,
    end: To = None,
    window: Annotated[Window | None, Query(description="one bucket per window")] = None,
    group_by: Annotated[
        list[Text] | None, Query(description="properties the meter may group by")
    ] = None,
) -> Response:
    """A meter's exact aggregate of one customer's usage, in the meter's own units."""
    report = await usage.report(
        call.session,
        await call.catalog(),
        call.ctx.tenant_id,
        external_id,
        meter,
        now=call.ctx.now,
        start=start,
        end=end,
        window=window,
        group_by=[name for value in group_by or [] for name in value.split(",") if name],
    )
    definition = report.meter.as_json()
    return json_response(
        UsageOut(
            customer=report.customer,
            meter=MeterOut(key=report.meter.key, **definition),
            start=report.start,
            end=report.end,
            window=report.window.value if report.window else None,
            group_by=list(report.group_by),
            buckets=[
                BucketOut(
                    start=bucket.start,
                    end=bucket.end,
                    group={k: exact(v) for k, v in bucket.group.items()},
                    value=exact(bucket.value),
                    events=bucket.events,
                )
                for bucket in report.buckets
            ],
        )
    )


@router.post(
    "/v1/entitlements/consume",
    operation_id="consumeQuota",
    response_model=ConsumeOut,
    openapi_extra=json_body_schema(ConsumeIn),
    responses={
        402: {
            "description": "`quota_exceeded` (under enforce): what remains, when it "
            "resets, and the plans that would allow it; `insufficient_balance` (under "
            "enforce, a feature paid from a wallet): the overage's `cost`, the wallet's "
            "`balance` and the `shortfall`, in minor units of `unit`"
        },
        404: {"description": "`feature_not_found`"},
        503: {"description": "`consume_contended`: retry"},
    },
)
@short_path
async def consume(request: Request, call: SelfCommittingReportCall) -> Response:
    """Check and record usage of a metered feature in one atomic step.

    Retrying with the same `idempotency_key` answers `replayed: true` and records
    nothing more: the answer repeats the first one's `event_id`, `overage` and `wallet`
    (the payment as it was made), with where the quota stands now. Under `enforce`, what
    a hard quota does not cover is refused with 402 `quota_exceeded`; under `advisory`
    it is allowed, and the overage is logged, counted and written to the event log as
    `QuotaExceeded`. A feature whose plans-file entry has `wallet` pays its overage from
    the customer's wallet in the same step (`wallet` in the answer), at the rate of the
    `model` in `properties` when the plans file gives AI tokens one; under `enforce` a
    wallet that cannot pay it is 402 `insufficient_balance`, and nothing is recorded: a
    retry of a refused consume is asked again."""
    body = await read_json(request, ConsumeIn)
    metering = call.collaborator(Metering)
    prepared = prepare_consume(
        call.ctx,
        await call.catalog(),
        body.customer,
        body.feature,
        body.amount,
        body.idempotency_key,
        enforcing=metering.enforcing,
        properties=body.properties,
    )
    await call.unit.release()  # hold no connection while the batch runs: it needs one
    try:
        done = await metering.consumer.consume(prepared)
    except InsufficientBalance:
        metering.wallet_refused.labels(body.feature).inc()
        raise
    if not done.replayed:  # a replay answers what was counted the first time
        if done.overage > 0:
            metering.overage.labels(body.feature, done.enforcement.value).inc(float(done.overage))
        if done.payment is not None and done.payment.paid:
            metering.wallet_paid.labels(body.feature, done.payment.unit).inc(done.payment.paid)
    return Response(to_json(consumed_payload(done)), media_type=events.JSON_TYPE)


def consumed_payload(done: Consumed) -> dict[str, Any]:
    """A `ConsumeOut` as plain data: consume is a hot route (the check API's pattern)."""
    standing = done.standing
    return {
        "customer": done.customer,
        "feature": done.feature,
        "allowed": True,
        "amount": str(exact(done.amount)),
        "used": str(exact(standing.used)),
        "remaining": show(standing.remaining),
        "limit": show(standing.limit),
        "overage": str(exact(done.overage)),
        "resets_at": standing.resets_at,
        "enforcement": done.enforcement.value,
        "event_id": done.event_id,
        "replayed": done.replayed,
        "wallet": None if done.payment is None else done.payment.as_json(),
    }


@router.post(
    "/v1/integrations/ai/usage-summary",
    operation_id="reportAiUsageSummary",
    response_model=SummaryOut,
    openapi_extra=json_body_schema(UsageSummaryIn),
)
async def usage_summary(request: Request, call: ReportCall) -> Response:
    """Turn a `chat.usage_summary` into usage events, one per model.

    Idempotent on chat id, sequence and model: a summary sent again counts once. The
    events draw on quotas like any others (`ai.tokens`)."""
    body = await read_json(request, UsageSummaryIn)
    items = ai.events_of(body.model_dump(mode="json"), (await call.catalog()).ai)
    return await accept_events(
        call, items, events.JSON_TYPE, echo={"chat_id": body.chat_id, "sequence": body.sequence}
    )


def _line(line: ai.Line) -> dict[str, int]:
    return {
        "calls": line.calls,
        "prompt_tokens": int(line.prompt_tokens),
        "completion_tokens": int(line.completion_tokens),
        "tokens": int(line.tokens),
        "duration_ms": int(line.duration_ms),
        "estimated_cost_minor": round_minor(line.cost, rounding=ROUND_HALF_EVEN),
        "unpriced_tokens": int(line.unpriced_tokens),
    }


@router.get(
    "/v1/customers/{external_id}/usage/ai", operation_id="getAiUsage", response_model=AiUsageOut
)
async def ai_usage(
    external_id: ExternalId,
    call: ReadCall,
    start: From = None,
    end: To = None,
) -> Response:
    """Tokens and estimated cost per workflow and per model over [from, to).

    Costs come from the plans file's `ai.models` price table, in minor units of
    `ai.currency`; each line is rounded once, half to even."""
    found = await usage.ai_usage(
        call.session,
        await call.catalog(),
        call.ctx.tenant_id,
        external_id,
        now=call.ctx.now,
        start=start,
        end=end,
    )
    report = found.report
    return json_response(
        AiUsageOut(
            customer=found.customer,
            start=found.start,
            end=found.end,
            currency=found.currency,
            total=AiLineOut(**_line(report.total)),
            workflows=[
                WorkflowOut(workflow=name, **_line(line))
                for name, line in sorted(report.by_workflow.items())
            ],
            models=[
                ModelOut(model=name, **_line(line))
                for name, line in sorted(report.by_model.items())
            ],
        )
    )
