"""All SQL for the event log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit.chain import GENESIS_HASH
from billfold.audit.tables import event_chain_heads, event_log
from billfold.kit.db import Record


async def create_chain(session: AsyncSession, tenant_id: str) -> None:
    await session.execute(
        insert(event_chain_heads).values(tenant_id=tenant_id, seq=0, hash=GENESIS_HASH)
    )


async def lock_head(session: AsyncSession, tenant_id: str) -> tuple[int, str]:
    """The chain head, locked until this transaction ends (SQLite: the write lock does it)."""
    row = (
        await session.execute(
            select(event_chain_heads.c.seq, event_chain_heads.c.hash)
            .where(event_chain_heads.c.tenant_id == tenant_id)
            .with_for_update()
        )
    ).one()
    return int(row.seq), str(row.hash)


async def append(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert chained entries of one tenant, in order, and move its head to the last."""
    await session.execute(insert(event_log), list(rows))
    last = rows[-1]
    await session.execute(
        update(event_chain_heads)
        .where(event_chain_heads.c.tenant_id == last["tenant_id"])
        .values(seq=last["seq"], hash=last["hash"])
    )


async def head(session: AsyncSession, tenant_id: str) -> tuple[int, str]:
    row = (
        await session.execute(
            select(event_chain_heads.c.seq, event_chain_heads.c.hash).where(
                event_chain_heads.c.tenant_id == tenant_id
            )
        )
    ).one()
    return int(row.seq), str(row.hash)


async def iterate(
    session: AsyncSession, tenant_id: str, *, chunk: int = 1000
) -> AsyncIterator[Record]:
    """Every entry of a tenant in sequence order, read in bounded chunks."""
    after = 0
    while True:
        rows = (
            await session.execute(
                select(event_log)
                .where(event_log.c.tenant_id == tenant_id, event_log.c.seq > after)
                .order_by(event_log.c.seq)
                .limit(chunk)
            )
        ).all()
        for row in rows:
            yield row
        if len(rows) < chunk:
            return
        after = int(rows[-1].seq)


async def page(
    session: AsyncSession,
    tenant_id: str,
    *,
    after_seq: int,
    limit: int,
    customer_id: str | None,
    types: Sequence[str],
    since: datetime | None,
    until: datetime | None,
) -> Sequence[Record]:
    statement = select(event_log).where(
        event_log.c.tenant_id == tenant_id, event_log.c.seq > after_seq
    )
    if customer_id is not None:
        statement = statement.where(event_log.c.customer_id == customer_id)
    if types:
        statement = statement.where(event_log.c.type.in_(types))
    if since is not None:
        statement = statement.where(event_log.c.occurred_at >= since)
    if until is not None:
        statement = statement.where(event_log.c.occurred_at < until)
    return (await session.execute(statement.order_by(event_log.c.seq).limit(limit))).all()
