"""The append-only, hash-chained event log: writing entries and verifying the chain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import repository
from billfold.audit.chain import GENESIS_HASH, entry_hash, hashed_fields
from billfold.kit.context import Context
from billfold.kit.invariants import invariant

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
    seq, prev_hash = await repository.lock_head(session, tenant_id)
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
    await repository.append(session, rows)
    return [row["seq"] for row in rows]


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    problem: str | None = None
    seq: int | None = None
    entry_id: int | None = None

    def describe(self) -> str:
        if self.ok:
            return f"ok: {self.entries} entries, chain intact"
        where = f"entry seq {self.seq}" + (f" (id {self.entry_id})" if self.entry_id else "")
        return f"BROKEN at {where}: {self.problem}"


async def verify(session: AsyncSession, tenant_id: str) -> Verification:
    """Walk the tenant's chain and name the first entry that was edited, deleted or moved.

    - edited: the entry's content no longer matches its own hash;
    - deleted: a sequence number is missing, or an entry links to a hash no entry has;
    - reordered: an entry links to an entry that exists but is not the one before it.
    """
    known_hashes = {row.hash async for row in repository.iterate(session, tenant_id)}
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    async for row in repository.iterate(session, tenant_id):
        fields = hashed_fields(
            tenant_id=row.tenant_id,
            type=row.type,
            customer_id=row.customer_id,
            data=row.data,
            actor_kind=row.actor_kind,
            actor_id=row.actor_id,
            actor_scope=row.actor_scope,
            correlation_id=row.correlation_id,
            occurred_at=row.occurred_at,
        )
        if entry_hash(row.prev_hash, fields) != row.hash:
            return _broken(count, row, "edited: its content no longer matches its hash")
        if row.seq != expected_seq:
            return Verification(
                ok=False,
                entries=count,
                problem=f"deleted: entry {expected_seq} is missing before entry {row.seq}",
                seq=expected_seq,
            )
        if row.prev_hash != prev_hash:
            if row.prev_hash in known_hashes or row.prev_hash == GENESIS_HASH:
                return _broken(count, row, "reordered: it does not follow the entry before it")
            return _broken(count, row, "deleted: the entry it follows is missing")
        prev_hash = row.hash
        expected_seq += 1
        count += 1
    head_seq, head_hash = await repository.head(session, tenant_id)
    if head_seq != count or head_hash != prev_hash:
        return Verification(
            ok=False,
            entries=count,
            problem=f"deleted: the chain head is at entry {head_seq} but the log ends at {count}",
            seq=count + 1,
        )
    return Verification(ok=True, entries=count)


def _broken(count: int, row: Any, problem: str) -> Verification:
    return Verification(ok=False, entries=count, problem=problem, seq=row.seq, entry_id=row.id)
