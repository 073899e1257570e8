"""All SQL that reads the event log (`billfold.kit.eventlog` writes it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.db import Record
from billfold.kit.eventlog import Head
from billfold.kit.tables import event_chain_heads, event_log


def _head_of(row: Record) -> Head:
    keyed_from = None if row.keyed_from is None else int(row.keyed_from)
    return Head(int(row.seq), str(row.hash), keyed_from, row.mac)


_HEAD = (
    event_chain_heads.c.tenant_id,
    event_chain_heads.c.seq,
    event_chain_heads.c.hash,
    event_chain_heads.c.keyed_from,
    event_chain_heads.c.mac,
)


async def head(session: AsyncSession, tenant_id: str) -> Head:
    row = (
        await session.execute(select(*_HEAD).where(event_chain_heads.c.tenant_id == tenant_id))
    ).one()
    return _head_of(row)


async def heads(session: AsyncSession) -> list[tuple[str, Head]]:
    """Every tenant's head, by tenant id."""
    rows = (await session.execute(select(*_HEAD).order_by(event_chain_heads.c.tenant_id))).all()
    return [(str(row.tenant_id), _head_of(row)) for row in rows]


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
