"""Overdue invoices move their subscriptions through the state machine: active to
past_due when an invoice falls due unpaid, past_due to suspended (entitlements stop) when
it stays unpaid for `suspend_after`, and back to active once nothing is overdue (paid,
credited, voided or written off). Retries and reminders come with the payments issue.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.billing.close import CloseSettings
from billfold.catalog.catalog import Catalog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.subscriptions import lifecycle
from billfold.subscriptions import repository as subscription_rows
from billfold.subscriptions.status import SubscriptionStatus as S


async def due(
    session: AsyncSession,
    now: datetime,
    settings: CloseSettings,
    limit: int,
    *,
    tenant_id: str | None = None,
    test_clock_id: str | None = None,
) -> list[Record]:
    """The subscriptions dunning moves now: (tenant_id, id, status, invoice_id, due_at)
    of those with an overdue invoice, and (tenant_id, id) of those that recovered."""
    moving = await subscription_rows.overdue(
        session,
        now,
        limit,
        past_due_since=now - settings.suspend_after,
        tenant_id=tenant_id,
        test_clock_id=test_clock_id,
    )
    recovered = await subscription_rows.recovered(
        session, now, limit, tenant_id=tenant_id, test_clock_id=test_clock_id
    )
    return [*moving, *recovered]


async def move(
    session: AsyncSession, ctx: Context, catalog: Catalog, row: Record, settings: CloseSettings
) -> str:
    """Move one subscription `due` found; returns its new status."""
    invoice_id = getattr(row, "invoice_id", None)
    if invoice_id is None:
        await lifecycle.reactivate(session, ctx, catalog, row.id)
        return S.ACTIVE
    if row.status == S.ACTIVE:
        await lifecycle.mark_past_due(session, ctx, catalog, row.id, invoice_id)
        return S.PAST_DUE
    await lifecycle.suspend(session, ctx, catalog, row.id, invoice_id)
    return S.SUSPENDED
