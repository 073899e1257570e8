"""All SQL for subscriptions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.tables import plans
from billfold.customers.tables import customers
from billfold.kit.db import Record
from billfold.subscriptions.status import SubscriptionStatus
from billfold.subscriptions.tables import subscriptions


def _with_names() -> Any:
    return (
        select(
            subscriptions,
            customers.c.external_id.label("customer_external_id"),
            plans.c.key.label("plan_key"),
        )
        .join(customers, customers.c.id == subscriptions.c.customer_id)
        .join(plans, plans.c.id == subscriptions.c.plan_id)
    )


async def by_id(
    session: AsyncSession, tenant_id: str, subscription_id: str, *, lock: bool = False
) -> Record | None:
    statement = _with_names().where(
        subscriptions.c.tenant_id == tenant_id, subscriptions.c.id == subscription_id
    )
    if lock:
        statement = statement.with_for_update(of=subscriptions)
    return (await session.execute(statement)).one_or_none()


async def active_of(session: AsyncSession, tenant_id: str, customer_id: str) -> Record | None:
    statement = _with_names().where(
        subscriptions.c.tenant_id == tenant_id,
        subscriptions.c.customer_id == customer_id,
        subscriptions.c.status == SubscriptionStatus.ACTIVE,
    )
    return (await session.execute(statement)).one_or_none()


async def of_customer(session: AsyncSession, tenant_id: str, customer_id: str) -> list[Record]:
    statement = (
        _with_names()
        .where(subscriptions.c.tenant_id == tenant_id, subscriptions.c.customer_id == customer_id)
        .order_by(subscriptions.c.created_at)
    )
    return list((await session.execute(statement)).all())


async def insert_subscription(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(subscriptions).values(**values))


async def update_subscription(session: AsyncSession, subscription_id: str, **values: Any) -> None:
    await session.execute(
        update(subscriptions).where(subscriptions.c.id == subscription_id).values(**values)
    )
