"""Routes: read the event log and verify its hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from billfold.audit import service
from billfold.http.calls import ReadCall
from billfold.kit.schemas import MAX_PAGE_SIZE, Instant, Out, Text

router = APIRouter(tags=["event log"])


class EventOut(Out):
    seq: int
    type: str
    customer: str | None
    data: dict[str, Any]
    actor: dict[str, str | None]
    correlation_id: str
    occurred_at: datetime
    hash: str


class EventsOut(Out):
    events: list[EventOut]
    next_cursor: str | None


class VerificationOut(Out):
    ok: bool
    entries: int
    problem: str | None
    seq: int | None


@router.get("/v1/audit/events", operation_id="listAuditEvents")
async def list_events(
    call: ReadCall,
    customer: Annotated[Text | None, Query(max_length=255)] = None,
    type: Annotated[list[Text] | None, Query(max_length=20)] = None,
    since: Annotated[Instant | None, Query()] = None,
    until: Annotated[Instant | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> EventsOut:
    """The event log, oldest first, filtered by customer, type and time; cursor-paginated."""
    found = await service.page(
        call.session,
        call.ctx.tenant_id,
        customer=customer,
        types=type or [],
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return EventsOut(
        events=[
            EventOut(
                seq=row.seq,
                type=row.type,
                customer=external_id,
                data=row.data,
                actor={"kind": row.actor_kind, "id": row.actor_id, "scope": row.actor_scope},
                correlation_id=row.correlation_id,
                occurred_at=row.occurred_at,
                hash=row.hash,
            )
            for row, external_id in found.entries
        ],
        next_cursor=found.next_cursor,
    )


@router.get("/v1/audit/verify", operation_id="verifyAuditChain")
async def verify_chain(call: ReadCall) -> VerificationOut:
    """Recompute the tenant's hash chain and name the first broken entry, if any."""
    result = await service.verify(call.session, call.ctx.tenant_id)
    return VerificationOut(
        ok=result.ok, entries=result.entries, problem=result.problem, seq=result.seq
    )
