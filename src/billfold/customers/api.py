"""Routes: customers, known by the product's own id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import Field

from billfold.customers import service
from billfold.customers.service import BillingDetails, Customer
from billfold.http.bodies import json_body_schema, read_json
from billfold.http.calls import AdminCall, ReadCall
from billfold.kit.schemas import (
    MAX_PAGE_SIZE,
    Body,
    Metadata,
    Out,
    Storable,
    decode_cursor,
    encode_cursor,
)

router = APIRouter(tags=["customers"])
ExternalId = Annotated[str, Path(min_length=1, max_length=255)]


class BillingIn(Body):
    """What invoices show of the customer and what taxes read."""

    address: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=200), Storable]], Field(max_length=6)
    ] = Field(default_factory=list)
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = Field(
        default=None, description="ISO 3166-1 alpha-2"
    )
    region: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,3}$")] | None = Field(
        default=None, description="the subdivision of ISO 3166-2, e.g. CA"
    )
    tax_id: Annotated[str, Field(min_length=2, max_length=64), Storable] | None = None
    locale: Annotated[str, Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")] | None = Field(
        default=None, description="documents' locale, e.g. de_DE"
    )


class CustomerIn(Body):
    name: Annotated[str, Field(max_length=200), Storable] | None = None
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"), Storable] | None = (
        None
    )
    metadata: Metadata = Field(default_factory=dict)
    billing: BillingIn = Field(default_factory=BillingIn)


class BillingOut(Out):
    address: list[str]
    country: str | None
    region: str | None
    tax_id: str | None
    locale: str | None


class CustomerOut(Out):
    id: str
    external_id: str
    name: str | None
    email: str | None
    metadata: dict[str, Any]
    billing: BillingOut
    test_clock_id: str | None = Field(
        default=None, description="a test-mode customer on this test clock"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, customer: Customer) -> CustomerOut:
        fields = {k: v for k, v in customer.__dict__.items() if k != "billing"}
        details = customer.billing
        billing = BillingOut(**{**details.__dict__, "address": list(details.address)})
        return cls(billing=billing, **fields)


class CustomersOut(Out):
    customers: list[CustomerOut]
    next_cursor: str | None


@router.put(
    "/v1/customers/{external_id}",
    operation_id="putCustomer",
    responses={201: {"model": CustomerOut, "description": "created"}},
    openapi_extra=json_body_schema(CustomerIn),
)
async def put_customer(external_id: ExternalId, call: AdminCall, response: Response) -> CustomerOut:
    """Create or update a customer's profile. Customers are also created on first grant."""
    body = await read_json(call.request, CustomerIn)
    customer, created = await service.upsert(
        call.session,
        call.ctx,
        external_id,
        name=body.name,
        email=body.email,
        metadata=body.metadata,
        billing=BillingDetails(
            **{**body.billing.model_dump(), "address": tuple(body.billing.address)}
        ),
    )
    response.status_code = 201 if created else 200
    return CustomerOut.of(customer)


@router.get(
    "/v1/customers/{external_id}",
    operation_id="getCustomer",
    responses={404: {"description": "`customer_not_found`"}},
)
async def get_customer(external_id: ExternalId, call: ReadCall) -> CustomerOut:
    return CustomerOut.of(await service.get(call.session, call.ctx.tenant_id, external_id))


@router.get("/v1/customers", operation_id="listCustomers")
async def list_customers(
    call: ReadCall,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> CustomersOut:
    page = await service.page(
        call.session, call.ctx.tenant_id, after=decode_cursor(cursor), limit=limit + 1
    )
    more = len(page) > limit
    page = page[:limit]
    return CustomersOut(
        customers=[CustomerOut.of(c) for c in page],
        next_cursor=encode_cursor(page[-1].external_id) if more and page else None,
    )
