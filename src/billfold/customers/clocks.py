"""Test clocks: simulated time for test-mode customers, as Stripe's test clocks are.

A test-mode customer is created on a clock and lives on its time: every change to its
subscriptions happens at the clock's `frozen_time`, and the real period close never
touches it. Advancing the clock (`billfold.billing.clocks.advance`) runs the lifecycle
and period close for its customers. A live customer is never put on a clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers import service as customers
from billfold.customers.tables import customers as customer_rows
from billfold.customers.tables import test_clocks
from billfold.kit.context import Context
from billfold.kit.errors import Conflict, FieldError, NotFound
from billfold.kit.ids import new_id

MAX_CUSTOMERS: Final = 100  # customers a clock may hold: an advance runs in one request


class TestClockNotFound(NotFound):
    code = "test_clock_not_found"


class CustomerIsLive(Conflict):
    code = "customer_is_live"
    title = "A live customer is never put on a test clock"


class TestClockFull(Conflict):
    code = "test_clock_full"
    title = "The test clock holds as many customers as it may"


@dataclass(frozen=True)
class TestClock:
    id: str
    name: str | None
    frozen_time: datetime
    created_at: datetime
    customers: tuple[str, ...] = ()  # external ids


async def create(
    session: AsyncSession, ctx: Context, *, name: str | None, frozen_time: datetime
) -> TestClock:
    clock_id = new_id("clk")
    await session.execute(
        test_clocks.insert().values(
            id=clock_id,
            tenant_id=ctx.tenant_id,
            name=name,
            frozen_time=frozen_time,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
    )
    return await get(session, ctx.tenant_id, clock_id)


async def get(
    session: AsyncSession, tenant_id: str, clock_id: str, *, lock: bool = False
) -> TestClock:
    statement = select(test_clocks).where(
        test_clocks.c.tenant_id == tenant_id, test_clocks.c.id == clock_id
    )
    if lock:
        statement = statement.with_for_update()
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise TestClockNotFound(f"no test clock {clock_id!r}")
    held = await session.execute(
        select(customer_rows.c.external_id)
        .where(customer_rows.c.tenant_id == tenant_id, customer_rows.c.test_clock_id == clock_id)
        .order_by(customer_rows.c.external_id)
    )
    return TestClock(
        id=row.id,
        name=row.name,
        frozen_time=row.frozen_time,
        created_at=row.created_at,
        customers=tuple(held.scalars()),
    )


async def add_customer(
    session: AsyncSession, ctx: Context, clock_id: str, external_id: str
) -> customers.Customer:
    """A new test-mode customer on the clock. One that exists already is live (or on
    another clock): `customer_is_live`, and nothing changes."""
    clock = await get(session, ctx.tenant_id, clock_id, lock=True)
    if len(clock.customers) >= MAX_CUSTOMERS:
        raise TestClockFull(f"test clock {clock_id} holds {MAX_CUSTOMERS} customers already")
    customers.check_external_id(external_id, pointer="#/customer")
    if await customers.find(session, ctx.tenant_id, external_id) is not None:
        raise CustomerIsLive(
            f"customer {external_id!r} exists already; a test clock takes only new customers",
            errors=[FieldError("a new customer id", pointer="#/customer")],
        )
    created = await customers.ensure(session, at(ctx, clock.frozen_time), external_id)
    await session.execute(
        update(customer_rows).where(customer_rows.c.id == created.id).values(test_clock_id=clock_id)
    )
    return await customers.get(session, ctx.tenant_id, external_id)


async def move(session: AsyncSession, ctx: Context, clock_id: str, to: datetime) -> None:
    await session.execute(
        update(test_clocks)
        .where(test_clocks.c.tenant_id == ctx.tenant_id, test_clocks.c.id == clock_id)
        .values(frozen_time=to, updated_at=ctx.now)
    )


async def context_for(session: AsyncSession, ctx: Context, external_id: str) -> Context:
    """`ctx` at the customer's time: its clock's for a test-mode customer, else as is."""
    statement = (
        select(test_clocks.c.frozen_time)
        .join(customer_rows, customer_rows.c.test_clock_id == test_clocks.c.id)
        .where(
            customer_rows.c.tenant_id == ctx.tenant_id,
            customer_rows.c.external_id == external_id,
        )
    )
    frozen = (await session.execute(statement)).scalar_one_or_none()
    return ctx if frozen is None else at(ctx, frozen)


def at(ctx: Context, moment: datetime) -> Context:
    return dataclasses.replace(ctx, now=moment)
