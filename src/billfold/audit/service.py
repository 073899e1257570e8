"""Reading the event log and verifying its hash chain (`billfold.kit.eventlog` writes it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import repository
from billfold.customers import service as customers
from billfold.kit.db import Record
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.eventlog import GENESIS_HASH, entry_hash, hashed_fields
from billfold.kit.schemas import decode_cursor, encode_cursor


@dataclass(frozen=True)
class Page:
    """Entries of the log, oldest first, each with its customer's external id."""

    entries: list[tuple[Record, str | None]]
    next_cursor: str | None


async def page(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer: str | None,
    types: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> Page:
    """One page of the tenant's log, filtered by customer, type and time; `cursor` is the
    last page's `next_cursor`."""
    after = decode_cursor(cursor)
    if after is not None and not after.isdigit():
        raise InvalidInput(
            "the cursor is not valid", errors=[FieldError("bad cursor", parameter="cursor")]
        )
    customer_id: str | None = None
    if customer is not None:
        customers.check_external_id(customer, parameter="customer")
        found = await customers.find(session, tenant_id, customer)
        if found is None:
            return Page([], None)
        customer_id = found.id
    rows = await repository.page(
        session,
        tenant_id,
        after_seq=int(after or 0),
        limit=limit + 1,
        customer_id=customer_id,
        types=types,
        since=since,
        until=until,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    external_ids: dict[str, str] = {}
    for row in rows:
        if row.customer_id and row.customer_id not in external_ids:
            external_ids[row.customer_id] = await customers.external_id_of(
                session, tenant_id, row.customer_id
            )
    return Page(
        entries=[(row, external_ids.get(row.customer_id or "")) for row in rows],
        next_cursor=encode_cursor(str(rows[-1].seq)) if more and rows else None,
    )


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
