"""Routes: read the event log and verify its hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from billfold.audit import repository, service
from billfold.customers import service as customers
from billfold.deps import ReadCall
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.schemas import MAX_PAGE_SIZE, Out, decode_cursor, encode_cursor

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


@router.get("/v1/audit/events")
async def list_events(
    call: ReadCall,
    customer: Annotated[str | None, Query(max_length=255)] = None,
    type: Annotated[list[str] | None, Query(max_length=20)] = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> EventsOut:
    """The event log, oldest first, filtered by customer, type and time; cursor-paginated."""
    after = decode_cursor(cursor)
    if after is not None and not after.isdigit():
        raise InvalidInput(
            "the cursor is not valid", errors=[FieldError("bad cursor", parameter="cursor")]
        )
    customer_id: str | None = None
    if customer is not None:
        customers.check_external_id(customer, parameter="customer")
        found = await customers.find(call.session, call.ctx.tenant_id, customer)
        if found is None:
            return EventsOut(events=[], next_cursor=None)
        customer_id = found.id
    rows = await repository.page(
        call.session,
        call.ctx.tenant_id,
        after_seq=int(after or 0),
        limit=limit + 1,
        customer_id=customer_id,
        types=type or [],
        since=since,
        until=until,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    external_ids: dict[str, str] = {}
    for row in rows:
        if row.customer_id and row.customer_id not in external_ids:
            external_ids[row.customer_id] = await customers.external_id_of(
                call.session, call.ctx.tenant_id, row.customer_id
            )
    return EventsOut(
        events=[
            EventOut(
                seq=row.seq,
                type=row.type,
                customer=external_ids.get(row.customer_id) if row.customer_id else None,
                data=row.data,
                actor={"kind": row.actor_kind, "id": row.actor_id, "scope": row.actor_scope},
                correlation_id=row.correlation_id,
                occurred_at=row.occurred_at,
                hash=row.hash,
            )
            for row in rows
        ],
        next_cursor=encode_cursor(str(rows[-1].seq)) if more and rows else None,
    )


@router.get("/v1/audit/verify")
async def verify_chain(call: ReadCall) -> VerificationOut:
    """Recompute the tenant's hash chain and name the first broken entry, if any."""
    result = await service.verify(call.session, call.ctx.tenant_id)
    return VerificationOut(
        ok=result.ok, entries=result.entries, problem=result.problem, seq=result.seq
    )
