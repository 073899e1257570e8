"""Routes: customers, known by the product's own id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import Field

from billfold.customers import service
from billfold.customers.service import Customer
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


class CustomerIn(Body):
    name: Annotated[str, Field(max_length=200), Storable] | None = None
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"), Storable] | None = (
        None
    )
    metadata: Metadata = Field(default_factory=dict)


class CustomerOut(Out):
    id: str
    external_id: str
    name: str | None
    email: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, customer: Customer) -> CustomerOut:
        return cls(**customer.__dict__)


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
