"""Reading the event log, verifying its keyed hash chain, and sealing and checkpointing
its heads (`billfold.kit.eventlog` writes it)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import repository
from billfold.customers import service as customers
from billfold.kit import eventlog
from billfold.kit.db import Record
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.eventlog import GENESIS_HASH, hashed_fields
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
        if self.seq is None:
            return f"BROKEN: {self.problem}"
        where = f"entry seq {self.seq}" + (f" (id {self.entry_id})" if self.entry_id else "")
        return f"BROKEN at {where}: {self.problem}"


@dataclass(frozen=True)
class Checkpoint:
    """A tenant's chain head exported outside the database, under a MAC of the chain key:
    a later log must still hold that entry, with that hash (decision 0025)."""

    tenant_id: str
    seq: int
    hash: str
    mac: str

    def as_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "seq": self.seq, "hash": self.hash, "mac": self.mac}

    @classmethod
    def from_json(cls, value: Any) -> Checkpoint:
        """One head of a checkpoint file; `ValueError` if it is not one."""
        if not isinstance(value, dict):
            raise ValueError("a checkpoint head is an object")
        try:
            tenant_id, seq, hash, mac = (value[k] for k in ("tenant_id", "seq", "hash", "mac"))
        except KeyError as missing:
            raise ValueError(f"a checkpoint head has no {missing}") from None
        if not (
            isinstance(tenant_id, str)
            and isinstance(seq, int)
            and isinstance(hash, str)
            and isinstance(mac, str)
        ):
            raise ValueError("a checkpoint head holds tenant_id, seq, hash and mac")
        return cls(tenant_id, seq, hash, mac)


UNSEALED = (
    "unsealed: the chain head carries no MAC (its entries were written before the chain "
    "was keyed, or someone removed it); run `billfold audit seal` once the entries verify"
)


async def verify(
    session: AsyncSession, tenant_id: str, checkpoint: Checkpoint | None = None
) -> Verification:
    """Walk the tenant's chain and name the first entry that was edited, deleted or moved,
    a chain head that was moved without the key, or (given a checkpoint) a log that no
    longer reaches, or no longer agrees with, the checkpoint.

    - edited: the entry's content no longer matches its own (keyed) hash;
    - deleted: a sequence number is missing, or an entry links to a hash no entry has;
    - reordered: an entry links to an entry that exists but is not the one before it;
    - head: the head's MAC does not match what it says (moved back without the key);
    - truncated, diverged: the log ends before, or differs at, the checkpoint's entry;
    - unsealed: the head carries no MAC at all.
    """
    result = await _walk(session, tenant_id, checkpoint)
    if result.ok and (await repository.head(session, tenant_id)).mac is None:
        return Verification(ok=False, entries=result.entries, problem=UNSEALED)
    return result


async def seal(session: AsyncSession, tenant_id: str) -> Verification:
    """Give a head written before the chain was keyed its MAC, once its entries verify;
    entries after it are keyed. A sealed head is verified and left as it is."""
    result = await _walk(session, tenant_id, None)
    if result.ok:
        await eventlog.seal(session, tenant_id)
    return result


async def checkpoint(session: AsyncSession, tenant_id: str) -> tuple[Verification, Checkpoint]:
    """The tenant's head as a checkpoint, after verifying the chain it ends."""
    result = await verify(session, tenant_id)
    head = await repository.head(session, tenant_id)
    mac = eventlog.checkpoint_mac(eventlog.key_of(session), tenant_id, head.seq, head.hash)
    return result, Checkpoint(tenant_id, head.seq, head.hash, mac)


async def _walk(
    session: AsyncSession, tenant_id: str, checkpoint: Checkpoint | None
) -> Verification:
    key = eventlog.key_of(session)
    head = await repository.head(session, tenant_id)
    if checkpoint is not None:
        expected = eventlog.checkpoint_mac(key, tenant_id, checkpoint.seq, checkpoint.hash)
        if checkpoint.tenant_id != tenant_id or not hmac.compare_digest(expected, checkpoint.mac):
            return Verification(
                ok=False,
                entries=0,
                problem="checkpoint: its MAC does not match: it was written for another "
                "tenant or with another key, or edited",
            )
    known_hashes = {row.hash async for row in repository.iterate(session, tenant_id)}
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    at_checkpoint: str | None = None
    async for row in repository.iterate(session, tenant_id):
        keyed = head.keyed_from is not None and row.seq >= head.keyed_from
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
        if not hmac.compare_digest(
            eventlog.entry_hash(row.prev_hash, fields, key if keyed else None), row.hash
        ):
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
        if checkpoint is not None and row.seq == checkpoint.seq:
            at_checkpoint = row.hash
        prev_hash = row.hash
        expected_seq += 1
        count += 1
    if head.mac is not None and not eventlog.head_is_sealed(key, tenant_id, head):
        return Verification(
            ok=False,
            entries=count,
            problem="head: its MAC does not match: the chain head was moved or rewritten "
            "without the key (rolled back?)",
            seq=head.seq,
        )
    if head.seq > count:
        return Verification(
            ok=False,
            entries=count,
            problem=f"deleted: the chain head is at entry {head.seq} but the log ends at {count}",
            seq=count + 1,
        )
    if head.seq < count:
        return Verification(
            ok=False,
            entries=count,
            problem=f"rolled back: the chain head is at entry {head.seq} but the log goes "
            f"on to entry {count}",
            seq=head.seq + 1,
        )
    if head.hash != prev_hash:
        return Verification(
            ok=False,
            entries=count,
            problem="diverged: the last entry is not the one the chain head holds",
            seq=count,
        )
    if checkpoint is not None and checkpoint.seq > 0:
        if count < checkpoint.seq:
            return Verification(
                ok=False,
                entries=count,
                problem=f"truncated: the checkpoint holds entry {checkpoint.seq} but the log "
                f"ends at {count}",
                seq=count + 1,
            )
        if at_checkpoint != checkpoint.hash:
            return Verification(
                ok=False,
                entries=count,
                problem=f"diverged: entry {checkpoint.seq} is not the one the checkpoint holds",
                seq=checkpoint.seq,
            )
    return Verification(ok=True, entries=count)


def _broken(count: int, row: Any, problem: str) -> Verification:
    return Verification(ok=False, entries=count, problem=problem, seq=row.seq, entry_id=row.id)
