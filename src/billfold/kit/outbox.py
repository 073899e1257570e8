"""The transactional outbox: what happened, announced exactly when it commits.

Every event-log entry gets an outbox row in the same transaction (`kit.eventlog`), so a
change that rolls back announces nothing and one that commits is announced once, even
if the process dies a moment later. `billfold worker outbox` drains the rows: it claims
a batch (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so workers never share a row), hands
each entry to the handlers of its type in a transaction of its own, and marks the row
delivered in that same transaction. A handler's own writes therefore take effect exactly
once; what it does outside the database must be idempotent, because a worker that dies
mid-delivery leaves its claim to expire and the entry to be handed over again.

A failed delivery is tried again later, `Backoff` after each failure, and parked after
`max_attempts`; parked rows stay for an operator, delivered ones are deleted after
`retention`. No handler is registered yet: webhooks, period close and dunning will be.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.clock import Clock
from billfold.kit.db import Database
from billfold.kit.tables import event_log, outbox
from billfold.kit.worker import Backoff

log = logging.getLogger("billfold.outbox")

ALL_TOPICS = "*"  # a handler of every entry


class Claimed(NamedTuple):
    """An outbox row in a worker's hands."""

    id: int
    tenant_id: str
    seq: int
    topic: str
    attempts: int
    claim: str


class Announcement(NamedTuple):
    """An event-log entry as its handlers receive it."""

    outbox_id: int
    tenant_id: str
    seq: int
    type: str
    customer_id: str | None
    data: Mapping[str, Any]
    actor_kind: str
    actor_id: str | None
    correlation_id: str
    occurred_at: datetime
    attempt: int  # 1 for the first delivery


Handler = Callable[[AsyncSession, Announcement], Awaitable[None]]


async def enqueue(session: AsyncSession, entries: Sequence[Mapping[str, Any]]) -> None:
    """An outbox row for each of one tenant's new event-log `entries`, in the caller's
    transaction. Only `kit.eventlog` calls it."""
    await session.execute(
        insert(outbox),
        [
            {
                "tenant_id": entry["tenant_id"],
                "event_seq": entry["seq"],
                "topic": entry["type"],
                "created_at": entry["occurred_at"],
                "available_at": entry["occurred_at"],
                "attempts": 0,
            }
            for entry in entries
        ],
    )


class OutboxSource:
    """The outbox as a `kit.worker.Source`: claims pending rows and delivers them."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        handlers: Mapping[str, Sequence[Handler]],
        *,
        lease: timedelta = timedelta(seconds=60),
        max_attempts: int = 10,
        backoff: Backoff | None = None,
        retention: timedelta = timedelta(days=7),
        idle_s: float = 1.0,
    ) -> None:
        self._database = database
        self._clock = clock
        self._handlers = handlers
        self._lease = lease
        self._max_attempts = max_attempts
        self._backoff = backoff or Backoff(initial_s=5.0, max_s=3600.0)
        self._retention = retention
        self._idle_s = idle_s
        self._pruned_at: datetime | None = None

    async def take(self, limit: int) -> list[Claimed]:
        await self._prune_now_and_then()
        claimed = await self.claim(limit)
        if not claimed:
            await asyncio.sleep(self._idle_s)
        return claimed

    async def claim(self, limit: int) -> list[Claimed]:
        """Up to `limit` pending rows, oldest first, held for the lease by a new claim.
        A claim counts as an attempt, so an entry whose delivery never finishes (its
        worker dies, or its handlers outlast every lease) is parked in the end too."""
        now = self._clock.now()
        token = secrets.token_hex(16)
        pending = (
            select(outbox.c.id)
            .where(
                outbox.c.delivered_at.is_(None),
                outbox.c.parked_at.is_(None),
                outbox.c.available_at <= now,
                or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
            )
            .order_by(outbox.c.available_at, outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(outbox)
            .where(outbox.c.id.in_(pending))
            .values(claim=token, claimed_until=now + self._lease, attempts=outbox.c.attempts + 1)
            .returning(
                outbox.c.id,
                outbox.c.tenant_id,
                outbox.c.event_seq,
                outbox.c.topic,
                outbox.c.attempts,
            )
        )
        async with self._database.transaction() as session:
            rows = (await session.execute(statement)).all()
        return sorted(Claimed(r[0], r[1], r[2], r[3], r[4], token) for r in rows)

    async def handle(self, batch: Sequence[Claimed], stop: asyncio.Event) -> None:
        for index, item in enumerate(batch):
            if stop.is_set():
                await self._release(batch[index:], self._clock.now())
                return
            await self.deliver(item)

    async def failed(self, batch: Sequence[Claimed], error: Exception, retry_in_s: float) -> None:
        await self._release(batch, self._clock.now() + timedelta(seconds=retry_in_s))

    async def deliver(self, item: Claimed) -> bool:
        """Hand one entry to its handlers and mark it delivered, all in one transaction;
        on failure, schedule the next attempt or park it. True when delivered.

        The transaction first takes the row, if the claim is still this worker's: from
        then on no other worker can claim it (its claim skips locked rows), however
        long the handlers take. A claim that was lost runs no handler at all."""
        if item.attempts > self._max_attempts:
            await self._schedule_retry(item, GaveUp(f"{item.attempts - 1} attempts never finished"))
            return False
        handlers = [*self._handlers.get(item.topic, ()), *self._handlers.get(ALL_TOPICS, ())]
        try:
            async with self._database.transaction() as session:
                held = await session.execute(
                    update(outbox)
                    .where(outbox.c.id == item.id, outbox.c.claim == item.claim)
                    .values(claimed_until=self._clock.now() + self._lease)
                )
                if not held.rowcount:  # type: ignore[attr-defined]
                    raise ClaimLost(f"outbox row {item.id} was claimed by another worker")
                announcement = await _announcement(session, item)
                for handler in handlers:
                    await handler(session, announcement)
                now = self._clock.now()
                await session.execute(
                    update(outbox)
                    .where(outbox.c.id == item.id)
                    .values(delivered_at=now, claim=None, claimed_until=None)
                )
        except ClaimLost:
            log.warning("outbox row %d: its claim expired and another worker has it", item.id)
            return False
        except Exception as error:
            await self._schedule_retry(item, error)
            return False
        return True

    async def _schedule_retry(self, item: Claimed, error: Exception) -> None:
        attempts = item.attempts  # counted when it was claimed
        now = self._clock.now()
        park = attempts >= self._max_attempts
        values: dict[str, Any] = {
            "claim": None,
            "claimed_until": None,
            "last_error": f"{type(error).__name__}: {error}"[:500],
            "available_at": now + timedelta(seconds=self._backoff.delay_s(attempts)),
        }
        if park:
            values["parked_at"] = now
        (log.error if park else log.warning)(
            "outbox row %d (%s of tenant %s, entry %d): attempt %d failed%s: %s",
            item.id,
            item.topic,
            item.tenant_id,
            item.seq,
            attempts,
            "; parked" if park else "",
            error,
        )
        async with self._database.transaction() as session:
            await session.execute(
                update(outbox)
                .where(outbox.c.id == item.id, outbox.c.claim == item.claim)
                .values(**values)
            )

    async def _release(self, items: Sequence[Claimed], available_at: datetime) -> None:
        """Give claimed rows back, to be taken again from `available_at`; their claims
        were no attempt."""
        if not items:
            return
        async with self._database.transaction() as session:
            await session.execute(
                update(outbox)
                .where(tuple_(outbox.c.id, outbox.c.claim).in_([(i.id, i.claim) for i in items]))
                .values(
                    claim=None,
                    claimed_until=None,
                    available_at=available_at,
                    attempts=outbox.c.attempts - 1,
                )
            )

    async def _prune_now_and_then(self) -> None:
        now = self._clock.now()
        if self._pruned_at is not None and now - self._pruned_at < timedelta(minutes=10):
            return
        self._pruned_at = now
        deleted = await prune(self._database, now - self._retention)
        if deleted:
            log.info("outbox: deleted %d rows delivered before %s", deleted, now - self._retention)


class ClaimLost(Exception):
    """The row's claim expired and another worker claimed it: this delivery rolls back."""


class GaveUp(Exception):
    """An entry claimed more often than it may be attempted: its deliveries never ended."""


async def prune(database: Database, before: datetime, *, chunk: int = 10_000) -> int:
    """Delete the rows delivered before `before`, `chunk` rows per transaction, so that a
    backlog never becomes one huge transaction; parked rows stay."""
    deleted = 0
    while True:
        done = select(outbox.c.id).where(outbox.c.delivered_at < before).limit(chunk)
        async with database.transaction() as session:
            result = await session.execute(delete(outbox).where(outbox.c.id.in_(done)))
        count = int(result.rowcount)  # type: ignore[attr-defined]
        deleted += count
        if count < chunk:
            return deleted


async def _announcement(session: AsyncSession, item: Claimed) -> Announcement:
    row = (
        await session.execute(
            select(event_log).where(
                and_(event_log.c.tenant_id == item.tenant_id, event_log.c.seq == item.seq)
            )
        )
    ).one()
    return Announcement(
        outbox_id=item.id,
        tenant_id=row.tenant_id,
        seq=row.seq,
        type=row.type,
        customer_id=row.customer_id,
        data=row.data,
        actor_kind=row.actor_kind,
        actor_id=row.actor_id,
        correlation_id=row.correlation_id,
        occurred_at=row.occurred_at,
        attempt=item.attempts,
    )
