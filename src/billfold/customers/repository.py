"""All SQL for customers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers.tables import customers
from billfold.kit.db import Record
from billfold.kit.sql import dialect_insert


async def by_external_id(session: AsyncSession, tenant_id: str, external_id: str) -> Record | None:
    statement = select(customers).where(
        customers.c.tenant_id == tenant_id, customers.c.external_id == external_id
    )
    return (await session.execute(statement)).one_or_none()


async def by_id(session: AsyncSession, tenant_id: str, customer_id: str) -> Record | None:
    statement = select(customers).where(
        customers.c.tenant_id == tenant_id, customers.c.id == customer_id
    )
    return (await session.execute(statement)).one_or_none()


async def by_ids(
    session: AsyncSession, tenant_id: str, customer_ids: Sequence[str]
) -> list[Record]:
    statement = select(customers).where(
        customers.c.tenant_id == tenant_id, customers.c.id.in_(sorted(set(customer_ids)))
    )
    return list((await session.execute(statement)).all())


async def insert_if_absent(session: AsyncSession, **values: Any) -> None:
    statement = (
        dialect_insert(session, customers)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["tenant_id", "external_id"])
    )
    await session.execute(statement)


async def update_profile(session: AsyncSession, customer_id: str, **values: Any) -> None:
    await session.execute(update(customers).where(customers.c.id == customer_id).values(**values))


async def page(
    session: AsyncSession, tenant_id: str, *, after: str | None, limit: int
) -> list[Record]:
    statement = select(customers).where(customers.c.tenant_id == tenant_id)
    if after is not None:
        statement = statement.where(customers.c.external_id > after)
    statement = statement.order_by(customers.c.external_id).limit(limit)
    return list((await session.execute(statement)).all())
