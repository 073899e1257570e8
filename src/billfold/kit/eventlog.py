"""The event log: an append-only record of every state change, per tenant, chained by
hashes and written in the transaction of the change it records.

`record` and `record_many` are the one way in, and each entry they write gets its
outbox row in the same transaction (`kit.outbox`). An entry's hash covers its previous
entry's hash and its own fields, so an edit breaks the entry itself, and a move or a
deletion breaks the link of the entry after it. The sequence number is left out of the
hash on purpose: order is what the links prove. Reading and verifying the log is the
`billfold.audit` domain's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit import outbox
from billfold.kit.context import Context
from billfold.kit.invariants import invariant
from billfold.kit.tables import event_chain_heads, event_log

GENESIS_HASH = "0" * 64

EventType = Literal[
    "SubscriptionActivated",
    "SubscriptionRenewed",
    "SubscriptionCancelled",
    "EntitlementGranted",
    "EntitlementRevoked",
    "ClaimBatchCreated",
    "ClaimCodeRedeemed",
    "ClaimCodesRevoked",
    "CatalogApplied",
    "ApiKeyCreated",
    "ApiKeyRevoked",
    "CustomerUpdated",
    "QuotaExceeded",
]


class Entry(NamedTuple):
    """One entry to append: who did what (the context), and to which customer."""

    ctx: Context
    type: EventType
    data: Mapping[str, Any]
    customer_id: str | None = None


async def create_chain(session: AsyncSession, tenant_id: str) -> None:
    """Start a new tenant's chain; its first entry will follow the genesis hash."""
    await session.execute(
        insert(event_chain_heads).values(tenant_id=tenant_id, seq=0, hash=GENESIS_HASH)
    )


async def record(
    session: AsyncSession,
    ctx: Context,
    type: EventType,
    data: Mapping[str, Any],
    *,
    customer_id: str | None = None,
) -> int:
    """Append one entry in the caller's transaction and return its sequence number."""
    return (await record_many(session, [Entry(ctx, type, data, customer_id)]))[0]


async def record_many(session: AsyncSession, entries: Sequence[Entry]) -> list[int]:
    """Append one tenant's entries in order, in the caller's transaction: the chain head
    is locked and moved once, however many there are. Returns their sequence numbers."""
    if not entries:
        return []
    tenant_id = entries[0].ctx.tenant_id
    invariant(all(e.ctx.tenant_id == tenant_id for e in entries), "one tenant's chain at a time")
    seq, prev_hash = await _lock_head(session, tenant_id)
    rows = []
    for ctx, type, data, customer_id in entries:
        seq += 1
        fields = hashed_fields(
            tenant_id=tenant_id,
            type=type,
            customer_id=customer_id,
            data=data,
            actor_kind=ctx.actor.kind,
            actor_id=ctx.actor.id,
            actor_scope=ctx.actor.scope,
            correlation_id=ctx.correlation_id,
            occurred_at=ctx.now,
        )
        values = dict(fields)
        values["seq"] = seq
        values["occurred_at"] = ctx.now
        values["prev_hash"] = prev_hash
        values["hash"] = prev_hash = entry_hash(prev_hash, fields)
        rows.append(values)
    await session.execute(insert(event_log), rows)
    await outbox.enqueue(session, rows)
    await session.execute(
        update(event_chain_heads)
        .where(event_chain_heads.c.tenant_id == tenant_id)
        .values(seq=seq, hash=prev_hash)
    )
    return [row["seq"] for row in rows]


async def _lock_head(session: AsyncSession, tenant_id: str) -> tuple[int, str]:
    """The chain head, locked until this transaction ends (SQLite: the write lock does it)."""
    row = (
        await session.execute(
            select(event_chain_heads.c.seq, event_chain_heads.c.hash)
            .where(event_chain_heads.c.tenant_id == tenant_id)
            .with_for_update()
        )
    ).one()
    return int(row.seq), str(row.hash)


def canonical_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the entry's fields as canonical JSON."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def hashed_fields(
    *,
    tenant_id: str,
    type: str,
    customer_id: str | None,
    data: Mapping[str, Any],
    actor_kind: str,
    actor_id: str | None,
    actor_scope: str | None,
    correlation_id: str,
    occurred_at: datetime,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "type": type,
        "customer_id": customer_id,
        "data": dict(data),
        "actor_kind": actor_kind,
        "actor_id": actor_id,
        "actor_scope": actor_scope,
        "correlation_id": correlation_id,
        "occurred_at": canonical_time(occurred_at),
    }
