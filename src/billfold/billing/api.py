"""Routes: a customer's upcoming invoice; test clocks (admin): create one, put new
test-mode customers on it, and advance it, their lifecycle and period close running at
the simulated time."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import Field

from billfold.billing import clocks as advancing
from billfold.billing import preview
from billfold.billing.close import CloseSettings
from billfold.customers import clocks
from billfold.customers.clocks import TestClock
from billfold.http.bodies import json_body_schema, read_json
from billfold.http.calls import AdminCall, ReadCall, idempotent
from billfold.invoicing.records import Invoicing
from billfold.kit.ids import ID_PATTERN
from billfold.kit.schemas import Body, Instant, Out, Storable

router = APIRouter(tags=["test clocks"])
ClockId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]


class ClockIn(Body):
    name: Annotated[str, Field(min_length=1, max_length=200), Storable] | None = None
    frozen_time: Instant


class CustomerOnClockIn(Body):
    customer: Annotated[str, Field(min_length=1, max_length=255)]


class AdvanceIn(Body):
    frozen_time: Instant


class ClockOut(Out):
    id: str
    name: str | None
    frozen_time: datetime
    customers: list[str]
    created_at: datetime

    @classmethod
    def of(cls, clock: TestClock) -> ClockOut:
        return cls(**{**clock.__dict__, "customers": list(clock.customers)})


class AdvancedOut(Out):
    clock: ClockOut
    closed: int = Field(description="periods closed")
    invoices: int = Field(description="invoices made")
    finalized: int = Field(description="drafts finalized")


class UpcomingLineOut(Out):
    kind: str
    description: str
    quantity: str
    period_start: datetime | None
    period_end: datetime | None
    amount_precise: str
    amount_minor: int
    tax_rate: str
    tax_minor: int


class UpcomingOut(Out):
    customer: str
    subscription_id: str
    currency: str
    period_start: datetime
    period_end: datetime = Field(description="when the invoice will be made")
    lines: list[UpcomingLineOut]
    subtotal_minor: int
    tax_minor: int
    total_minor: int


@router.get(
    "/v1/customers/{external_id}/upcoming-invoice",
    operation_id="upcomingInvoice",
    tags=["invoices"],
    responses={404: {"description": "`customer_not_found` or `no_upcoming_invoice`"}},
)
async def upcoming_invoice(
    external_id: Annotated[str, Path(min_length=1, max_length=255)], call: ReadCall
) -> UpcomingOut:
    """The customer's next invoice as it stands: the current period's usage so far, the
    pending prorations and the next period's fee, taxed for the customer now."""
    ctx = await clocks.context_for(call.session, call.ctx, external_id)
    found = await preview.upcoming(
        call.session, ctx, await call.catalog(), external_id, call.collaborator(Invoicing)
    )
    return UpcomingOut(
        customer=found.customer,
        subscription_id=found.subscription_id,
        currency=found.currency,
        period_start=found.period_start,
        period_end=found.period_end,
        lines=[
            UpcomingLineOut(
                kind=line.kind.value,
                description=line.description,
                quantity=_text(line.quantity),
                period_start=line.period_start,
                period_end=line.period_end,
                amount_precise=_text(line.amount_precise),
                amount_minor=line.amount_minor,
                tax_rate=_text(line.tax_rate),
                tax_minor=line.tax_minor,
            )
            for line in found.lines
        ],
        subtotal_minor=found.subtotal_minor,
        tax_minor=found.tax_minor,
        total_minor=found.total_minor,
    )


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


@router.post(
    "/v1/test-clocks",
    operation_id="createTestClock",
    status_code=201,
    openapi_extra=json_body_schema(ClockIn),
)
@idempotent
async def create_clock(call: AdminCall) -> ClockOut:
    """A simulated clock for test-mode customers, frozen at `frozen_time`."""
    body = await read_json(call.request, ClockIn)
    clock = await clocks.create(
        call.session, call.ctx, name=body.name, frozen_time=body.frozen_time
    )
    return ClockOut.of(clock)


@router.get(
    "/v1/test-clocks/{clock_id}",
    operation_id="getTestClock",
    responses={404: {"description": "`test_clock_not_found`"}},
)
async def get_clock(clock_id: ClockId, call: ReadCall) -> ClockOut:
    return ClockOut.of(await clocks.get(call.session, call.ctx.tenant_id, clock_id))


@router.post(
    "/v1/test-clocks/{clock_id}/customers",
    operation_id="addTestClockCustomer",
    status_code=201,
    responses={
        404: {"description": "`test_clock_not_found`"},
        409: {"description": "`customer_is_live` (the customer exists) or `test_clock_full`"},
    },
    openapi_extra=json_body_schema(CustomerOnClockIn),
)
async def add_customer(clock_id: ClockId, call: AdminCall) -> ClockOut:
    """Create a new test-mode customer on the clock. A customer that exists is live and is
    never put on a clock."""
    body = await read_json(call.request, CustomerOnClockIn)
    await clocks.add_customer(call.session, call.ctx, clock_id, body.customer)
    return ClockOut.of(await clocks.get(call.session, call.ctx.tenant_id, clock_id))


@router.post(
    "/v1/test-clocks/{clock_id}/advance",
    operation_id="advanceTestClock",
    responses={
        404: {"description": "`test_clock_not_found`"},
        422: {"description": "`test_clock_cannot_go_back`"},
    },
    openapi_extra=json_body_schema(AdvanceIn),
)
async def advance(clock_id: ClockId, call: AdminCall) -> AdvancedOut:
    """Move the clock forward: each period end and each draft's end of grace of its
    customers is run at its simulated instant, earliest first, in this request."""
    body = await read_json(call.request, AdvanceIn)
    done = await advancing.advance(
        call.session,
        call.ctx,
        await call.catalog(),
        clock_id,
        body.frozen_time,
        call.collaborator(CloseSettings),
    )
    return AdvancedOut(
        clock=ClockOut.of(done.clock),
        closed=done.closed,
        invoices=done.invoices,
        finalized=done.finalized,
    )
