"""What the wallets' tests share: credit, spend and read a balance in one line each,
every call in its own transaction, as the operator at the harness's clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from billfold.kit.tables import event_log
from billfold.wallets import service as wallets
from billfold.wallets.records import Lot, Spent, WalletBalance
from tests.conftest import Harness


async def credit(
    harness: Harness,
    amount: int,
    *,
    customer: str = "ada",
    unit: str = "credits",
    source: str = "grant",
    reference: str | None = None,
    expires_at: datetime | None = None,
    priority: int = 100,
    **kw: Any,
) -> Lot:
    async with harness.database.transaction() as session:
        return await wallets.credit(
            session,
            harness.operator(),
            customer_id=customer,
            unit=unit,
            amount=amount,
            source=source,
            reference=reference or f"ref-{customer}-{unit}-{amount}-{priority}-{expires_at}",
            expires_at=expires_at,
            priority=priority,
            **kw,
        )


async def spend(
    harness: Harness,
    amount: int,
    reference: str,
    *,
    customer: str = "ada",
    unit: str = "credits",
    **kw: Any,
) -> Spent:
    async with harness.database.transaction() as session:
        return await wallets.spend(
            session,
            harness.operator(),
            customer_id=customer,
            unit=unit,
            amount=amount,
            reference=reference,
            **kw,
        )


async def balance(harness: Harness, customer: str = "ada", unit: str = "credits") -> WalletBalance:
    async with harness.database.transaction(write=False) as session:
        return await wallets.balance(session, harness.operator(), customer, unit)


async def event_types(harness: Harness, prefix: str = "Wallet") -> list[str]:
    """The tenant's event-log entry types that start with `prefix`, in order."""
    async with harness.database.transaction(write=False) as session:
        rows = await session.execute(
            select(event_log.c.type)
            .where(event_log.c.tenant_id == harness.tenant_id, event_log.c.type.like(f"{prefix}%"))
            .order_by(event_log.c.seq)
        )
        return list(rows.scalars())


async def events(harness: Harness, type: str) -> list[dict[str, Any]]:
    async with harness.database.transaction(write=False) as session:
        rows = await session.execute(
            select(event_log.c.data)
            .where(event_log.c.tenant_id == harness.tenant_id, event_log.c.type == type)
            .order_by(event_log.c.seq)
        )
        return [dict(data) for data in rows.scalars()]
