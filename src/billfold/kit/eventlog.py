"""The event log: an append-only record of every state change, per tenant, chained by
keyed hashes and written in the transaction of the change it records.

`record` and `record_many` are the one way in, and each entry they write gets its
outbox row in the same transaction (`kit.outbox`). An entry's hash is an HMAC, under a key
derived from the deployment's secret key (kept outside the database), of its previous
entry's hash and its own fields: an edit breaks the entry itself, a move or a deletion
breaks the link of the entry after it, and rewriting the chain needs the secret. The
tenant's head row carries the last entry's number and hash under a MAC of its own, so a
head moved back without the secret is seen too (decision 0025). Entries written before
the chain was keyed keep their plain SHA-256 hashes; the head says from which entry on
they are keyed. The sequence number is left out of an entry's hash on purpose: order is
what the links prove. Reading and verifying the log is the `billfold.audit` domain's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit import outbox
from billfold.kit.context import Context
from billfold.kit.db import CHAIN_KEY
from billfold.kit.invariants import invariant
from billfold.kit.tables import event_chain_heads, event_log

GENESIS_HASH = "0" * 64
# The chain key is derived from the settings' secret key under this label, so that it is
# independent of the claim-code hashes the same secret keys.
CHAIN_KEY_LABEL = b"billfold/event-log/chain/v1"

EventType = Literal[
    "SubscriptionActivated",
    "SubscriptionRenewed",
    "SubscriptionCancelled",
    "SubscriptionCancelScheduled",
    "SubscriptionCancelUndone",
    "SubscriptionChanged",
    "SubscriptionPaused",
    "SubscriptionResumed",
    "SubscriptionTrialEnded",
    "SubscriptionPastDue",
    "SubscriptionSuspended",
    "SubscriptionReactivated",
    "InvoiceCreated",
    "InvoiceFinalized",
    "InvoicePaid",
    "InvoiceVoided",
    "InvoiceMarkedUncollectible",
    "PaymentRecorded",
    "CreditNoteIssued",
    "RefundPaid",
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
    "WalletCredited",
    "WalletSpent",
    "WalletUpdated",
    "WalletBalanceLow",
    "WalletExhausted",
    "WalletHoldCreated",
    "WalletHoldSettled",
    "WalletHoldReleased",
    "WalletHoldExpired",
    "WalletCreditExpired",
    "WalletTopUpCreated",
    "WalletTopUpFailed",
    "SplitTableChanged",
    "SettlementSettled",
    "PayoutBatchCreated",
    "UsagePaidFromWallet",
]


class Entry(NamedTuple):
    """One entry to append: who did what (the context), and to which customer."""

    ctx: Context
    type: EventType
    data: Mapping[str, Any]
    customer_id: str | None = None


class ChainHeadTampered(RuntimeError):
    """The tenant's chain head does not carry its MAC: it was moved without the key.

    Nothing is appended to a head that fails its MAC (it would launder the move); the
    operator runs `billfold audit verify` and decides (decision 0025)."""


class Head(NamedTuple):
    """A tenant's chain head: the last entry's number and hash; from which entry on the
    entries are keyed (None: none yet); and its MAC (None: not sealed yet)."""

    seq: int
    hash: str
    keyed_from: int | None
    mac: str | None


def chain_key(secret_key: bytes) -> bytes:
    """The event log's key, derived from the deployment's secret key."""
    return hmac.new(secret_key, CHAIN_KEY_LABEL, hashlib.sha256).digest()


def key_of(session: AsyncSession) -> bytes:
    """The chain key of the session's database (`Database.key_event_log`)."""
    key = session.info.get(CHAIN_KEY)
    if not isinstance(key, bytes):
        raise RuntimeError("the event log is read and written only with its chain key")
    return key


def head_mac(key: bytes, tenant_id: str, seq: int, hash: str, keyed_from: int | None) -> str:
    """The MAC a head carries: it binds the tenant, the last entry and the keyed boundary."""
    message = f"head\n{tenant_id}\n{seq}\n{hash}\n{keyed_from}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def checkpoint_mac(key: bytes, tenant_id: str, seq: int, hash: str) -> str:
    """The MAC of a checkpoint (a head exported outside the database)."""
    message = f"checkpoint\n{tenant_id}\n{seq}\n{hash}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def head_is_sealed(key: bytes, tenant_id: str, head: Head) -> bool:
    """The head carries a MAC, and it is the right one for what the head says."""
    if head.mac is None:
        return False
    expected = head_mac(key, tenant_id, head.seq, head.hash, head.keyed_from)
    return hmac.compare_digest(expected, head.mac)


async def create_chain(session: AsyncSession, tenant_id: str) -> None:
    """Start a new tenant's chain, keyed and sealed: its first entry follows the genesis
    hash."""
    key = key_of(session)
    await session.execute(
        insert(event_chain_heads).values(
            tenant_id=tenant_id,
            seq=0,
            hash=GENESIS_HASH,
            keyed_from=1,
            mac=head_mac(key, tenant_id, 0, GENESIS_HASH, 1),
        )
    )


async def seal(session: AsyncSession, tenant_id: str) -> Head:
    """Seal a head written before the chain was keyed: entries after it are keyed, and the
    head gets its MAC. The caller has verified the unkeyed entries first. A sealed head is
    left as it is."""
    key = key_of(session)
    head = await lock_head(session, tenant_id)
    if head.mac is not None:
        return head
    keyed_from = head.keyed_from if head.keyed_from is not None else head.seq + 1
    sealed = Head(
        head.seq, head.hash, keyed_from, head_mac(key, tenant_id, head.seq, head.hash, keyed_from)
    )
    await session.execute(
        update(event_chain_heads)
        .where(event_chain_heads.c.tenant_id == tenant_id)
        .values(keyed_from=sealed.keyed_from, mac=sealed.mac)
    )
    return sealed


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
    key = key_of(session)
    head = await lock_head(session, tenant_id)
    if head.mac is not None and not head_is_sealed(key, tenant_id, head):
        raise ChainHeadTampered(
            f"the event-log head of tenant {tenant_id} fails its MAC: it was moved without "
            "the key; run `billfold audit verify`"
        )
    seq, prev_hash = head.seq, head.hash
    # A head not sealed yet (written before the chain was keyed) keys what follows it,
    # but only `billfold audit seal` gives it a MAC: an append must not launder a head
    # that someone moved.
    keyed_from = head.keyed_from if head.keyed_from is not None else seq + 1
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
        values["hash"] = prev_hash = entry_hash(prev_hash, fields, key)
        rows.append(values)
    await session.execute(insert(event_log), rows)
    await outbox.enqueue(session, rows)
    await session.execute(
        update(event_chain_heads)
        .where(event_chain_heads.c.tenant_id == tenant_id)
        .values(
            seq=seq,
            hash=prev_hash,
            keyed_from=keyed_from,
            mac=None if head.mac is None else head_mac(key, tenant_id, seq, prev_hash, keyed_from),
        )
    )
    return [row["seq"] for row in rows]


async def lock_head(session: AsyncSession, tenant_id: str) -> Head:
    """The chain head, locked until this transaction ends (SQLite: the write lock does it)."""
    row = (
        await session.execute(
            select(
                event_chain_heads.c.seq,
                event_chain_heads.c.hash,
                event_chain_heads.c.keyed_from,
                event_chain_heads.c.mac,
            )
            .where(event_chain_heads.c.tenant_id == tenant_id)
            .with_for_update()
        )
    ).one()
    keyed_from = None if row.keyed_from is None else int(row.keyed_from)
    return Head(int(row.seq), str(row.hash), keyed_from, row.mac)


def canonical_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, fields: Mapping[str, Any], key: bytes | None) -> str:
    """HMAC-SHA-256 under the chain key (or, for an entry written before the chain was
    keyed, `key` None: plain SHA-256) of the previous hash and the entry's fields as
    canonical JSON. The two cost the same."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = f"{prev_hash}\n{body}".encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


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
