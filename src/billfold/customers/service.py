"""Customers: the billed subjects of a tenant, known by the product's own id."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers import repository
from billfold.kit import changes
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.errors import FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_id

EXTERNAL_ID = re.compile(r"^[^\s/\\?#%\x00-\x1f\x7f]{1,255}$")


class CustomerNotFound(NotFound):
    code = "customer_not_found"


@dataclass(frozen=True)
class Customer:
    id: str
    external_id: str
    name: str | None
    email: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    billing: BillingDetails = field(default_factory=lambda: BillingDetails())
    test_clock_id: str | None = None  # a test-mode customer on a simulated clock


@dataclass(frozen=True)
class BillingDetails:
    """What invoices show of the customer and what taxes read: all optional."""

    address: tuple[str, ...] = ()
    country: str | None = None  # ISO 3166-1 alpha-2
    region: str | None = None  # ISO 3166-2 subdivision, e.g. CA
    tax_id: str | None = None
    locale: str | None = None  # the customer's documents' locale, e.g. de_DE

    def as_values(self) -> dict[str, Any]:
        return {
            "address": list(self.address) or None,
            "country": self.country,
            "region": self.region,
            "tax_id": self.tax_id,
            "locale": self.locale,
        }


def change_topic(tenant_id: str, external_id: str) -> str:
    """The change-stream topic for a customer's existence and grants."""
    return f"customer:{tenant_id}:{external_id}"


def check_external_id(
    external_id: str, *, pointer: str | None = None, parameter: str = "external_id"
) -> str:
    """Refuse ids that cannot round-trip through a URL path segment."""
    if not EXTERNAL_ID.match(external_id):
        where = FieldError(
            "1 to 255 characters, without spaces, slashes, ?, #, % or control characters",
            pointer=pointer,
            parameter=None if pointer else parameter,
        )
        raise InvalidInput("the customer id is not valid", errors=[where])
    return external_id


async def find(session: AsyncSession, tenant_id: str, external_id: str) -> Customer | None:
    row = await repository.by_external_id(session, tenant_id, external_id)
    return _customer(row) if row is not None else None


async def get(session: AsyncSession, tenant_id: str, external_id: str) -> Customer:
    check_external_id(external_id)
    customer = await find(session, tenant_id, external_id)
    if customer is None:
        raise CustomerNotFound(f"no customer {external_id!r}")
    return customer


async def by_ids(
    session: AsyncSession, tenant_id: str, customer_ids: Sequence[str]
) -> dict[str, Customer]:
    """The tenant's customers of these ids (by id), in one read; missing ones are absent."""
    rows = await repository.by_ids(session, tenant_id, customer_ids)
    return {row.id: _customer(row) for row in rows}


async def external_id_of(session: AsyncSession, tenant_id: str, customer_id: str) -> str:
    row = await repository.by_id(session, tenant_id, customer_id)
    if row is None:
        raise CustomerNotFound(f"no customer {customer_id!r}")
    return str(row.external_id)


async def ensure(session: AsyncSession, ctx: Context, external_id: str) -> Customer:
    """The customer with this id, created on first mention (safe under concurrent calls)."""
    check_external_id(external_id)
    existing = await find(session, ctx.tenant_id, external_id)
    if existing is not None:
        return existing
    await changes.publish(session, change_topic(ctx.tenant_id, external_id))
    await repository.insert_if_absent(
        session,
        id=new_id("cus"),
        tenant_id=ctx.tenant_id,
        external_id=external_id,
        name=None,
        email=None,
        metadata={},
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    return await get(session, ctx.tenant_id, external_id)


async def upsert(
    session: AsyncSession,
    ctx: Context,
    external_id: str,
    *,
    name: str | None,
    email: str | None,
    metadata: dict[str, Any],
    billing: BillingDetails | None = None,
) -> tuple[Customer, bool]:
    """Create or update a customer's profile; returns it and whether it was created."""
    check_external_id(external_id)
    found = await find(session, ctx.tenant_id, external_id)
    customer = found or await ensure(session, ctx, external_id)
    billing = billing or BillingDetails()
    before = (customer.name, customer.email, customer.metadata, customer.billing)
    if before != (name, email, metadata, billing):
        await repository.update_profile(
            session,
            customer.id,
            name=name,
            email=email,
            metadata=metadata,
            updated_at=ctx.now,
            **billing.as_values(),
        )
        customer = await get(session, ctx.tenant_id, external_id)
    return customer, found is None


async def page(
    session: AsyncSession, tenant_id: str, *, after: str | None, limit: int
) -> list[Customer]:
    return [
        _customer(row)
        for row in await repository.page(session, tenant_id, after=after, limit=limit)
    ]


def _customer(row: Record) -> Customer:
    return Customer(
        id=row.id,
        external_id=row.external_id,
        name=row.name,
        email=row.email,
        metadata=dict(row.metadata),
        created_at=row.created_at,
        updated_at=row.updated_at,
        billing=BillingDetails(
            address=tuple(row.address or ()),
            country=row.country,
            region=row.region,
            tax_id=row.tax_id,
            locale=row.locale,
        ),
        test_clock_id=row.test_clock_id,
    )
