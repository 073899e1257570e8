"""Pending lines: charges and credits of a subscription's changes (prorations) waiting
for its next invoice, which period close makes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.invoicing import repository
from billfold.invoicing.records import Charge
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.ids import new_id


async def add(session: AsyncSession, ctx: Context, subscription_id: str, charge: Charge) -> None:
    """A charge or credit waiting for the subscription's next invoice (a proration)."""
    await repository.insert_pending(
        session,
        id=new_id("pnd"),
        tenant_id=ctx.tenant_id,
        subscription_id=subscription_id,
        kind=charge.kind,
        description=charge.description,
        quantity=charge.quantity,
        price=dict(charge.price) if charge.price is not None else None,
        period_start=charge.period_start,
        period_end=charge.period_end,
        amount_precise=charge.amount_precise,
        created_at=ctx.now,
    )


async def take_many(
    session: AsyncSession, subscription_ids: Sequence[str]
) -> dict[str, list[Charge]]:
    """The subscriptions' pending charges (of those that have any), removed: the caller
    puts them on their invoices in the same transaction."""
    rows = await repository.pending_of(session, subscription_ids)
    await repository.delete_pending(session, [row.id for row in rows])
    return _charges(rows)


async def peek(session: AsyncSession, subscription_id: str) -> list[Charge]:
    """The subscription's pending charges, left where they are (for a preview)."""
    return _charges(await repository.pending_of(session, [subscription_id])).get(
        subscription_id, []
    )


def _charges(rows: list[Record]) -> dict[str, list[Charge]]:
    """Each subscription's charges, in the order they were made; a change's credit before
    its charge."""
    found: dict[str, list[Charge]] = {}
    for row in sorted(rows, key=lambda row: (row.created_at, row.amount_precise)):
        found.setdefault(row.subscription_id, []).append(_charge(row))
    return found


def _charge(row: Record) -> Charge:
    return Charge(
        kind=row.kind,
        description=row.description,
        quantity=row.quantity,
        amount_precise=row.amount_precise,
        price=row.price,
        period_start=row.period_start,
        period_end=row.period_end,
    )
