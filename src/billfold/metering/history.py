"""Reading the usage events a tenant stored, as stored: filtered, oldest first, a page at
a time (`GET /v1/events`). Reads only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers import service as customers
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.ids import ID_PATTERN
from billfold.kit.schemas import decode_cursor, encode_cursor
from billfold.metering import repository


@dataclass(frozen=True)
class StoredEvent:
    id: str
    idempotency_key: str
    customer: str
    type: str
    service: str | None
    correlation_id: str | None
    timestamp: datetime
    received_at: datetime
    properties: dict[str, Any]


@dataclass(frozen=True)
class EventsPage:
    events: list[StoredEvent]
    next_cursor: str | None


def _bad_cursor() -> InvalidInput:
    return InvalidInput(
        "the cursor is not valid",
        errors=[FieldError("not a cursor we issued", parameter="cursor")],
    )


def position_of(cursor: str | None) -> tuple[datetime, str] | None:
    """The (timestamp, id) a page's `next_cursor` names: the last event it answered."""
    text = decode_cursor(cursor)
    if text is None:
        return None
    moment, _, event_id = text.partition(" ")
    try:
        at = datetime.fromisoformat(moment)
    except ValueError:
        raise _bad_cursor() from None
    if at.tzinfo is None or not event_id.startswith("use_") or not ID_PATTERN.match(event_id):
        raise _bad_cursor()
    return at, event_id


def cursor_of(event: StoredEvent) -> str:
    return encode_cursor(f"{event.timestamp.isoformat()} {event.id}")


async def page(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer: str | None,
    types: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    correlation_id: str | None,
    cursor: str | None,
    limit: int,
) -> EventsPage:
    """One page of the tenant's events with `start <= timestamp < end`, in (timestamp, id)
    order; `cursor` is the previous page's `next_cursor`."""
    if customer is not None:
        customers.check_external_id(customer, parameter="customer")
    if start is not None and end is not None and end <= start:
        raise InvalidInput(
            "`to` must be later than `from`", errors=[FieldError("after from", parameter="to")]
        )
    after = position_of(cursor)
    rows = await repository.page_of_events(
        session,
        tenant_id,
        customer=customer,
        types=types,
        start=start,
        end=end,
        correlation_id=correlation_id,
        after=after,
        limit=limit + 1,
    )
    found = [
        StoredEvent(
            id=row.id,
            idempotency_key=row.idempotency_key,
            customer=row.customer,
            type=row.type,
            service=row.service,
            correlation_id=row.correlation_id,
            timestamp=row.occurred_at,
            received_at=row.received_at,
            properties=row.properties,
        )
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    return EventsPage(found, cursor_of(found[-1]) if more and found else None)
