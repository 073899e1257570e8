"""Routes: report usage events, and read a customer's usage through a meter."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime
from pydantic_core import to_json

from billfold.customers import service as customers
from billfold.deps import Call, ReadCall, ReportCall, SelfCommittingReportCall, short_path
from billfold.kit.errors import BillfoldError
from billfold.kit.http import body_of, json_body_schema, json_response, read_json
from billfold.metering import events, quotas, service
from billfold.metering.model import exact
from billfold.metering.schemas import (
    BucketOut,
    ConsumeIn,
    ConsumeOut,
    IngestOut,
    MeterOut,
    UsageOut,
)
from billfold.metering.service import Window

router = APIRouter(tags=["metering"])

EVENTS_PATH = "/v1/events"
ExternalId = Annotated[str, Path(min_length=1, max_length=255)]


class EventsRejected(BillfoldError):
    status = 422
    code = "events_rejected"
    title = "No event was accepted"


class UnreadableEvents(BillfoldError):
    status = 400
    code = "unreadable_events"
    title = "The body is not a usage event or a batch of them"


class UnsupportedMediaType(BillfoldError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


def _example(media_type: str, value: Any) -> dict[str, Any]:
    return {media_type: {"schema": {"type": "object"}, "example": value}}


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
    response_model=IngestOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                **_example(events.JSON_TYPE, [_SINGLE]),
                **_example(events.CLOUDEVENT_TYPE, _CLOUDEVENT),
                **_example(events.CLOUDEVENTS_BATCH_TYPE, [_CLOUDEVENT]),
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
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in events.MEDIA_TYPES:
        raise UnsupportedMediaType(f"send one of {', '.join(events.MEDIA_TYPES)}")
    try:
        items = events.read_body(await body_of(request), media_type)
    except events.BodyError as error:
        raise UnreadableEvents(str(error)) from None
    return Response(to_json(await accept(call, items, media_type)), media_type=events.JSON_TYPE)


async def accept(call: Call, items: list[Any], media_type: str) -> dict[str, Any]:
    """Check each item as a usage event, store or queue the good ones, and answer for
    each (an `IngestOut`, as plain data: a batch holds up to 10,000 results);
    `events_rejected` (with every result) when not one was good."""
    settings = call.services.settings
    late = timedelta(seconds=settings.usage_late_window_s)
    skew = timedelta(seconds=settings.usage_clock_skew_s)
    checked = [events.check(item, media_type, call.ctx.now, late, skew) for item in items]
    outcomes, queued = await store_or_queue(call, checked)
    results = [outcome._asdict() for outcome in outcomes]  # OutcomeOut's fields
    counts = Counter(outcome.status for outcome in outcomes)
    if counts["rejected"] == len(outcomes):
        raise EventsRejected(
            f"every event was rejected; the first: {outcomes[0].reason}",
            extra={"results": results},
        )
    return {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "queued": queued,
        "results": results,
    }


async def store_or_queue(
    call: Call, checked: list[events.UsageEvent | events.Rejection]
) -> tuple[list[service.Outcome], bool]:
    """Store checked events (and draw quotas) now, or, with BILLFOLD_INGEST, append them
    to the stream for `billfold worker ingest`. Returns the outcomes and whether queued."""
    publisher = call.services.publisher
    if publisher is not None:
        outcomes, firsts = service.triage(checked)
        if firsts:
            await publisher.publish(call.ctx, list(firsts.values()))
        return outcomes, True
    late = timedelta(seconds=call.services.settings.usage_late_window_s)
    outcomes, overages = await service.ingest(
        call.session, call.ctx, await call.catalog(), checked, late_window=late
    )
    for feature, overage in overages.items():
        call.services.metrics.quota_overage.labels(feature, "reported").inc(float(overage))
    return outcomes, False


@router.get("/v1/customers/{external_id}/usage", response_model=UsageOut)
async def customer_usage(
    external_id: ExternalId,
    call: ReadCall,
    meter: Annotated[str, Query(max_length=100, description="a meter of the plans file")],
    start: Annotated[
        AwareDatetime | None, Query(alias="from", description="default: this month's start")
    ] = None,
    end: Annotated[
        AwareDatetime | None, Query(alias="to", description="default: next month's start")
    ] = None,
    window: Annotated[Window | None, Query(description="one bucket per window")] = None,
    group_by: Annotated[
        list[str] | None, Query(description="properties the meter may group by")
    ] = None,
) -> Response:
    """A meter's exact aggregate of one customer's usage, in the meter's own units."""
    customers.check_external_id(external_id)
    start_at, end_at = service.reporting_period(call.ctx.now, start, end)
    report = await service.usage(
        call.session,
        await call.catalog(),
        call.ctx.tenant_id,
        external_id,
        meter,
        start_at,
        end_at,
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
    response_model=ConsumeOut,
    openapi_extra=json_body_schema(ConsumeIn),
    responses={
        402: {
            "description": "quota_exceeded (under enforce): what remains, when it "
            "resets, and the plans that would allow it"
        }
    },
)
@short_path
async def consume(request: Request, call: SelfCommittingReportCall) -> Response:
    """Check and record usage of a metered feature in one atomic step.

    Retrying with the same `idempotency_key` answers `replayed: true` and records
    nothing more. Under `enforce`, what a hard quota does not cover is refused with 402
    `quota_exceeded`; under `advisory` it is allowed, and the overage is logged, counted
    and written to the event log as `QuotaExceeded`."""
    body = await read_json(request, ConsumeIn)
    customers.check_external_id(body.customer, pointer="#/customer")
    settings = call.services.settings
    prepared = quotas.prepare_consume(
        call.ctx,
        await call.catalog(),
        body.customer,
        body.feature,
        body.amount,
        body.idempotency_key,
        default_enforcement=settings.enforcement,
        platform=settings.mode == "platform",
        properties=body.properties,
    )
    await call.unit.release()  # hold no connection while the batch runs: it needs one
    done = await call.services.consumer.consume(prepared)
    if done.overage > 0:
        call.services.metrics.quota_overage.labels(body.feature, done.enforcement.value).inc(
            float(done.overage)
        )
    return Response(to_json(consumed_payload(done)), media_type=events.JSON_TYPE)


def consumed_payload(done: quotas.Consumed) -> dict[str, Any]:
    """A `ConsumeOut` as plain data: consume is a hot route (the check API's pattern)."""
    standing = done.standing
    return {
        "customer": done.customer,
        "feature": done.feature,
        "allowed": True,
        "amount": str(exact(done.amount)),
        "used": str(exact(standing.used)),
        "remaining": quotas.show(standing.remaining),
        "limit": quotas.show(standing.limit),
        "overage": str(exact(done.overage)),
        "resets_at": standing.resets_at,
        "enforcement": done.enforcement.value,
        "event_id": done.event_id,
        "replayed": done.replayed,
    }
