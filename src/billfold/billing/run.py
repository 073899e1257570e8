"""A period-close run: close every billed subscription whose period ended by `until`,
then finalize every draft whose grace ended by then. `billfold invoices run --until T`
runs it once; `billfold worker billing` runs it on a schedule.

Subscriptions are closed a batch of one tenant's per transaction (`close_many`): a few
statements for the batch, not a few per subscription. When a batch fails, it is rolled
back and each of its subscriptions is closed alone, so one that fails is rolled back,
logged, counted and left for the next run, and the rest go on. Drafts whose grace has
ended are finalized the same way, a batch per transaction. A subscription that is
behind by several periods is closed once per period, in order.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.billing import dunning
from billfold.billing.close import Closed, CloseSettings, close_many, finalize_drafts
from billfold.catalog import catalog as catalogs
from billfold.catalog import repository as catalog_rows
from billfold.catalog.catalog import Catalog
from billfold.invoicing import service as invoicing
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database, Record
from billfold.subscriptions import repository as subscription_rows

log = logging.getLogger("billfold.billing")
BATCH: Final = 500  # subscriptions closed per transaction, drafts read per query
T = TypeVar("T")
SYSTEM = Actor(kind="system", id="period close", scope=None)


@dataclass
class Report:
    closed: int = 0
    invoices: int = 0
    finalized: int = 0
    dunned: int = 0  # subscriptions moved to past_due, suspended, or back to active
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, error)


@dataclass(frozen=True)
class Step:
    """What a progress display is told: which phase, and how many done of how many seen."""

    phase: str  # "close" or "finalize"
    done: int


async def run(
    database: Database,
    until: datetime,
    *,
    now: datetime,
    settings: CloseSettings,
    tenant_id: str | None = None,
    on_step: Callable[[Step], None] | None = None,
    on_failure: Callable[[str], None] | None = None,
) -> Report:
    """Close what ended by `until` (at most `now`), then finalize the drafts due by then."""
    report = Report()
    failed: set[str] = set()
    cache: dict[str, Catalog] = {}

    checked: set[str] = set()  # tenants whose catalog revision this batch has read

    async def catalog_of(session: AsyncSession, tenant: str) -> Catalog:
        """The tenant's catalog, its revision read once a batch (not in every
        transaction): a plans apply during a run reaches the next batch."""
        cached = cache.get(tenant)
        if cached is not None and tenant in checked:
            return cached
        revision = await catalog_rows.revision(session, tenant)
        checked.add(tenant)
        if cached is None or cached.revision != revision:
            cached = cache[tenant] = await catalogs.load(session, tenant, revision)
        return cached

    def context(tenant: str) -> Context:
        return Context(tenant, SYSTEM, f"close-{uuid.uuid4().hex[:16]}", now)

    async def batch(
        phase: str,
        tenant: str,
        ids: list[str],
        work: Callable[[AsyncSession, str, list[str]], Awaitable[list[T]]],
    ) -> list[T]:
        """`work` on the batch in one transaction; when that fails, on each of its items
        alone, so that one's failure never stops the others."""
        try:
            async with database.transaction() as session:
                return await work(session, tenant, ids)
        except Exception:
            log.warning("period close: a %s batch of %d failed; each alone", phase, len(ids))
        done: list[T] = []
        for item in ids:
            try:
                async with database.transaction() as session:
                    done += await work(session, tenant, [item])
            except Exception as error:
                _failed(report, failed, item, error, phase, on_failure)
        return done

    while True:
        async with database.transaction(write=False) as session:
            due = await subscription_rows.due_for_close(
                session, until, BATCH + len(failed), tenant_id=tenant_id
            )
        due = [row for row in due if row.id not in failed]
        if not due:
            break
        checked.clear()
        for tenant, ids in _per_tenant(due).items():

            async def close(session: AsyncSession, tenant: str, ids: list[str]) -> list[Closed]:
                catalog = await catalog_of(session, tenant)
                return await close_many(session, context(tenant), catalog, ids, until, settings)

            for one in await batch("close", tenant, ids, close):
                report.closed += 1
                report.invoices += one.invoice_id is not None
                report.finalized += one.finalized
            if on_step:
                on_step(Step("close", report.closed))
    while True:
        async with database.transaction(write=False) as session:
            drafts = await invoicing.due_drafts(
                session, until, limit=BATCH + len(failed), tenant_id=tenant_id
            )
        drafts = [d for d in drafts if d.id not in failed]
        if not drafts:
            break
        checked.clear()
        for tenant, ids in _per_tenant(drafts).items():

            async def finalize(session: AsyncSession, tenant: str, ids: list[str]) -> list[str]:
                catalog = await catalog_of(session, tenant)
                return await finalize_drafts(session, context(tenant), catalog, ids, settings)

            report.finalized += len(await batch("finalize", tenant, ids, finalize))
            if on_step:
                on_step(Step("finalize", report.finalized))
    while True:
        async with database.transaction(write=False) as session:
            moving = await dunning.due(
                session, until, settings, BATCH + len(failed), tenant_id=tenant_id
            )
        moving = [row for row in moving if row.id not in failed]
        if not moving:
            break
        checked.clear()
        for row in moving:
            try:
                async with database.transaction() as session:
                    catalog = await catalog_of(session, row.tenant_id)
                    await dunning.move(session, context(row.tenant_id), catalog, row, settings)
            except Exception as error:
                _failed(report, failed, row.id, error, "dunning", on_failure)
                continue
            report.dunned += 1
    return report


def _per_tenant(rows: list[Record]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.tenant_id, []).append(row.id)
    return found


def _failed(
    report: Report,
    failed: set[str],
    item: str,
    error: Exception,
    phase: str,
    on_failure: Callable[[str], None] | None,
) -> None:
    failed.add(item)
    report.failed.append((item, f"{type(error).__name__}: {error}"))
    log.error("period close: %s of %s failed", phase, item, exc_info=error)
    if on_failure:
        on_failure(phase)
