"""All SQL for grants."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers.tables import customers
from billfold.grants.tables import grants
from billfold.kit.db import Record


def _not_ended(moment: datetime) -> Any:
    return and_(
        or_(grants.c.ends_at.is_(None), grants.c.ends_at > moment),
        or_(grants.c.revoked_at.is_(None), grants.c.revoked_at > moment),
    )


def _live(moment: datetime) -> Any:
    return and_(grants.c.starts_at <= moment, _not_ended(moment))


async def customer_with_current_grants(
    session: AsyncSession, tenant_id: str, external_id: str, moment: datetime
) -> tuple[str | None, list[Record]]:
    """The customer's id and its grants that have not ended by `moment` (live ones and
    ones that start later), in one round trip: (None, []) if the customer is unknown."""
    statement = (
        select(customers.c.id.label("customer_pk"), grants)
        .select_from(customers)
        .outerjoin(grants, and_(grants.c.customer_id == customers.c.id, _not_ended(moment)))
        .where(customers.c.tenant_id == tenant_id, customers.c.external_id == external_id)
    )
    rows = (await session.execute(statement)).all()
    if not rows:
        return None, []
    return rows[0].customer_pk, [row for row in rows if row.id is not None]


async def customers_with_current_grants(
    session: AsyncSession, tenant_id: str, external_ids: Sequence[str], moment: datetime
) -> dict[str, tuple[str, list[Record]]]:
    """`customer_with_current_grants` for many customers, a thousand per round trip.
    Unknown customers are left out."""
    found: dict[str, tuple[str, list[Record]]] = {}
    for start in range(0, len(external_ids), 1_000):
        statement = (
            select(
                customers.c.external_id.label("external_id_"),
                customers.c.id.label("customer_pk"),
                grants,
            )
            .select_from(customers)
            .outerjoin(grants, and_(grants.c.customer_id == customers.c.id, _not_ended(moment)))
            .where(
                customers.c.tenant_id == tenant_id,
                customers.c.external_id.in_(external_ids[start : start + 1_000]),
            )
        )
        for row in await session.execute(statement):
            _pk, held = found.setdefault(row.external_id_, (row.customer_pk, []))
            if row.id is not None:
                held.append(row)
    return found


async def of_customer(
    session: AsyncSession, tenant_id: str, customer_id: str, *, live_at: datetime | None
) -> list[Record]:
    statement = select(grants).where(
        grants.c.tenant_id == tenant_id, grants.c.customer_id == customer_id
    )
    if live_at is not None:
        statement = statement.where(_live(live_at))
    statement = statement.order_by(grants.c.starts_at, grants.c.id)
    return list((await session.execute(statement)).all())


async def by_id(session: AsyncSession, tenant_id: str, grant_id: str) -> Record | None:
    statement = select(grants).where(grants.c.tenant_id == tenant_id, grants.c.id == grant_id)
    return (await session.execute(statement)).one_or_none()


async def of_subscription(
    session: AsyncSession, tenant_id: str, subscription_id: str
) -> list[Record]:
    statement = (
        select(grants)
        .where(grants.c.tenant_id == tenant_id, grants.c.subscription_id == subscription_id)
        .order_by(grants.c.starts_at)
    )
    return list((await session.execute(statement)).all())


async def insert_grant(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(grants).values(**values))


async def revoke(session: AsyncSession, tenant_id: str, grant_id: str, now: datetime) -> bool:
    """End a grant now, unless it has already ended or was revoked (a no-op then)."""
    result = await session.execute(
        update(grants)
        .where(
            grants.c.tenant_id == tenant_id,
            grants.c.id == grant_id,
            grants.c.revoked_at.is_(None),
            or_(grants.c.ends_at.is_(None), grants.c.ends_at > now),
        )
        .values(revoked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
