"""The expiry job: per tenant, release holds whose timeout passed (the ledger's
`expire`), mark those holds expired, and move what expired lots still hold to
`breakage:{unit}`. Each step runs in bounded batches, each batch in a transaction of its
own, and each is idempotent: a job stopped half-way is resumed by the next run, and two
jobs at once do each thing once (docs/operating.md, "Wallet expiry").

A lot's breakage transfer is `wex:{lot_id}:{debits so far}`: the same state gives the
same id (a replay), and what a later release frees on an expired lot is swept by a new
one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit import eventlog
from billfold.kit.clock import Clock
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database
from billfold.ledger import service as ledger
from billfold.ledger.records import NewTransfer
from billfold.wallets import accounts, holds, repository
from billfold.wallets import service as wallets
from billfold.wallets.records import Hold

log = logging.getLogger("billfold.wallets")
BATCH: Final = 100  # rows per transaction
MAX_ROUNDS: Final = 100  # batches per step and run; the next run goes on
SYSTEM: Final = Actor(kind="system", id="wallet expiry", scope=None)


@dataclass
class ExpiryReport:
    pending_expired: int = 0  # ledger pending transfers voided at their timeout
    holds_expired: int = 0
    lots_expired: int = 0
    breakage: dict[str, int] = field(default_factory=dict)  # unit -> amount moved

    def add(self, other: ExpiryReport) -> None:
        self.pending_expired += other.pending_expired
        self.holds_expired += other.holds_expired
        self.lots_expired += other.lots_expired
        for unit, amount in other.breakage.items():
            self.breakage[unit] = self.breakage.get(unit, 0) + amount

    def describe(self) -> str:
        moved = ", ".join(f"{amount} {unit}" for unit, amount in sorted(self.breakage.items()))
        return (
            f"{self.pending_expired} pending transfers expired, {self.holds_expired} holds "
            f"expired, {self.lots_expired} lots expired ({moved or 'nothing'} to breakage)"
        )


async def expire_tenant(database: Database, tenant_id: str, now: datetime) -> ExpiryReport:
    """Run the job once for one tenant, at `now`."""
    ctx = Context(tenant_id, SYSTEM, f"wallet-expiry:{now.isoformat()}", now)
    report = ExpiryReport()
    for _round in range(MAX_ROUNDS):
        async with database.transaction() as session:
            voided = await ledger.expire(session, ctx, limit=BATCH)
        report.pending_expired += len(voided)
        if len(voided) < BATCH:
            break
    for _round in range(MAX_ROUNDS):
        async with database.transaction() as session:
            done, seen = await _expire_holds(session, ctx)
        report.holds_expired += done
        if seen < BATCH or done == 0:
            break
    for _round in range(MAX_ROUNDS):
        async with database.transaction() as session:
            seen = await _expire_lots(session, ctx, report)
        if seen < BATCH:
            break
    return report


async def expire_all(
    database: Database, now: datetime, tenant_ids: Sequence[str] | None = None
) -> ExpiryReport:
    """Run the job once for these tenants (default: those with something due)."""
    if tenant_ids is None:
        async with database.transaction(write=False) as session:
            tenant_ids = await repository.tenants_with_expiry_due(session, now)
    report = ExpiryReport()
    for tenant_id in tenant_ids:
        report.add(await expire_tenant(database, tenant_id, now))
    return report


async def _expire_holds(session: AsyncSession, ctx: Context) -> tuple[int, int]:
    rows = await repository.timed_out_holds(session, ctx.tenant_id, ctx.now, BATCH)
    done = 0
    for row in rows:
        found = await wallets.wallet(session, ctx, row.wallet_id, lock=True)
        again = await repository.hold_by_client_id(session, ctx.tenant_id, row.hold_id)
        if again is None or again.status != "held":
            continue  # settled or released meanwhile
        if await holds.expire_timed_out(session, ctx, found, Hold.of(again, found.unit)):
            done += 1
    return done, len(rows)


async def _expire_lots(session: AsyncSession, ctx: Context, report: ExpiryReport) -> int:
    rows = await repository.expired_lots(session, ctx.tenant_id, ctx.now, BATCH)
    for row in rows:
        found = await wallets.wallet(session, ctx, row.wallet_id, lock=True)
        remaining, debited = await repository.lot_remaining(session, row.id)
        if remaining <= 0:
            continue  # spent or swept meanwhile
        breakage = await accounts.chart_account(session, ctx, f"breakage:{found.unit}", found.unit)
        made = await ledger.transfer(
            session,
            ctx,
            NewTransfer(
                f"wex:{row.id}:{debited}",
                row.account_id,
                breakage.id,
                remaining,
                code="wallet_expiry",
                metadata={"wallet_id": found.id, "lot_id": row.id},
            ),
        )
        await eventlog.record(
            session,
            ctx,
            "WalletCreditExpired",
            {
                "wallet_id": found.id,
                "lot_id": row.id,
                "unit": found.unit,
                "amount": remaining,
                "transfer_ids": [made.id],
            },
            customer_id=found.customer_id,
        )
        report.lots_expired += 1
        report.breakage[found.unit] = report.breakage.get(found.unit, 0) + remaining
    return len(rows)


class ExpirySource:
    """The job as a `kit.worker.Source`: an item is a tenant with something due; a
    tenant whose run fails is tried again after the runner's backoff."""

    def __init__(self, database: Database, clock: Clock, *, idle_s: float = 5.0) -> None:
        self._database = database
        self._clock = clock
        self._idle_s = idle_s
        self.report = ExpiryReport()

    async def take(self, limit: int) -> list[str]:
        async with self._database.transaction(write=False) as session:
            due = await repository.tenants_with_expiry_due(session, self._clock.now())
        if not due:
            await asyncio.sleep(self._idle_s)
        return due[:limit]

    async def handle(self, batch: Sequence[str], stop: asyncio.Event) -> None:
        for tenant_id in batch:
            if stop.is_set():
                return
            done = await expire_tenant(self._database, tenant_id, self._clock.now())
            self.report.add(done)
            log.info("wallet expiry: %s", done.describe(), extra={"tenant_id": tenant_id})

    async def failed(self, batch: Sequence[str], error: Exception, retry_in_s: float) -> None:
        log.error(
            "wallet expiry failed: %s; retrying in %.1fs",
            error,
            retry_in_s,
            extra={"tenants": list(batch)},
        )
        await asyncio.sleep(retry_in_s)
