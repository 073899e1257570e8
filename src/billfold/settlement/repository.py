"""All of settlement's SQL. Payable balances are read from the ledger's accounts table
(read only: every change to them goes through `billfold.ledger.service`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.db import Record
from billfold.kit.sql import dialect_insert
from billfold.ledger.tables import ledger_accounts
from billfold.settlement.tables import (
    payout_batches,
    payout_heads,
    payout_lines,
    settlements,
    split_tables,
)

PAYABLE_PREFIX = "payable:"


async def current_split(session: AsyncSession, tenant_id: str, app_id: str) -> Record | None:
    statement = (
        select(split_tables)
        .where(split_tables.c.tenant_id == tenant_id, split_tables.c.app_id == app_id)
        .order_by(split_tables.c.version.desc())
        .limit(1)
    )
    return (await session.execute(statement)).first()


async def split_versions(
    session: AsyncSession, tenant_id: str, app_id: str, *, before: int | None, limit: int
) -> list[Record]:
    """The app's split table versions, newest first, older than `before` if given."""
    statement = select(split_tables).where(
        split_tables.c.tenant_id == tenant_id, split_tables.c.app_id == app_id
    )
    if before is not None:
        statement = statement.where(split_tables.c.version < before)
    statement = statement.order_by(split_tables.c.version.desc()).limit(limit)
    return list((await session.execute(statement)).all())


async def insert_split(session: AsyncSession, row: Mapping[str, Any]) -> bool:
    """Insert a version; False if that version was taken meanwhile."""
    statement = (
        dialect_insert(session, split_tables)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["tenant_id", "app_id", "version"])
        .returning(split_tables.c.version)
    )
    return (await session.execute(statement)).first() is not None


async def settlement(session: AsyncSession, tenant_id: str, settlement_id: str) -> Record | None:
    statement = select(settlements).where(
        settlements.c.tenant_id == tenant_id, settlements.c.id == settlement_id
    )
    return (await session.execute(statement)).first()


async def insert_settlement(session: AsyncSession, row: Mapping[str, Any]) -> bool:
    """Claim the settlement's id: False if it is taken. On PostgreSQL a concurrent insert
    of the same id waits here for the other transaction, then finds it taken (or takes
    it, if the other rolled back)."""
    statement = (
        dialect_insert(session, settlements)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["tenant_id", "id"])
        .returning(settlements.c.id)
    )
    return (await session.execute(statement)).first() is not None


async def lock_payout_head(session: AsyncSession, tenant_id: str, now: datetime) -> None:
    """Take the tenant's payout lock (its head row, made on first use) until the end of
    the transaction: payout runs of one tenant take turns."""
    statement = (
        dialect_insert(session, payout_heads)
        .values(tenant_id=tenant_id, updated_at=now)
        .on_conflict_do_update(index_elements=["tenant_id"], set_={"updated_at": now})
    )
    await session.execute(statement)


async def set_last_batch(session: AsyncSession, tenant_id: str, batch_id: str) -> None:
    statement = (
        payout_heads.update()
        .where(payout_heads.c.tenant_id == tenant_id)
        .values(last_batch_id=batch_id)
    )
    await session.execute(statement)


async def batch_by_period(session: AsyncSession, tenant_id: str, period: str) -> Record | None:
    statement = select(payout_batches).where(
        payout_batches.c.tenant_id == tenant_id, payout_batches.c.period == period
    )
    return (await session.execute(statement)).first()


async def batch_by_id(session: AsyncSession, tenant_id: str, batch_id: str) -> Record | None:
    statement = select(payout_batches).where(
        payout_batches.c.tenant_id == tenant_id, payout_batches.c.id == batch_id
    )
    return (await session.execute(statement)).first()


async def insert_batch(session: AsyncSession, row: Mapping[str, Any]) -> None:
    await session.execute(payout_batches.insert().values(**row))


async def insert_lines(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(payout_lines.insert(), list(rows))


async def lines_of(session: AsyncSession, batch_id: str) -> list[Record]:
    statement = (
        select(payout_lines)
        .where(payout_lines.c.batch_id == batch_id)
        .order_by(payout_lines.c.payee, payout_lines.c.currency)
    )
    return list((await session.execute(statement)).all())


async def payables_owed(session: AsyncSession, tenant_id: str, limit: int) -> list[Record]:
    """The tenant's payable accounts with something to pay out (posted credits beyond
    posted and pending debits), by code: `id`, `code`, `unit` and `available`."""
    available = (
        ledger_accounts.c.credits_posted
        - ledger_accounts.c.debits_posted
        - ledger_accounts.c.debits_pending
    )
    statement = (
        select(
            ledger_accounts.c.id,
            ledger_accounts.c.code,
            ledger_accounts.c.unit,
            available.label("available"),
        )
        .where(
            ledger_accounts.c.tenant_id == tenant_id,
            ledger_accounts.c.code.startswith(PAYABLE_PREFIX, autoescape=True),
            available > 0,
        )
        .order_by(ledger_accounts.c.code)
        .limit(limit)
    )
    return list((await session.execute(statement)).all())
