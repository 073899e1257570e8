"""Admin-driven subscriptions (the entitlement-first path): activate, renew, cancel.

Each change moves the subscription's plan grant with it and writes its event-log entries
in the same transaction. Billing periods and prices arrive with the subscriptions issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.customers import service as customers
from billfold.grants import service as grants
from billfold.grants.service import Window
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_id
from billfold.subscriptions import repository
from billfold.subscriptions.status import SubscriptionStatus

PLAN_SOURCE = "plan"


class SubscriptionNotFound(NotFound):
    code = "subscription_not_found"


class SubscriptionAlreadyActive(Conflict):
    code = "subscription_already_active"


class SubscriptionNotActive(Conflict):
    code = "subscription_not_active"


class SubscriptionOpenEnded(Conflict):
    code = "subscription_open_ended"


@dataclass(frozen=True)
class Subscription:
    id: str
    customer: str
    plan: str
    plan_version_id: str
    status: SubscriptionStatus
    started_at: datetime
    current_period_ends_at: datetime | None
    canceled_at: datetime | None
    ends_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


async def activate(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    external_id: str,
    plan_key: str,
    *,
    starts_at: datetime | None,
    period_ends_at: datetime | None,
    metadata: dict[str, Any],
) -> Subscription:
    version = catalog.require_plan(plan_key)
    window = Window(starts_at or ctx.now, period_ends_at)
    customer = await customers.ensure(session, ctx, external_id)
    existing = await repository.active_of(session, ctx.tenant_id, customer.id)
    if existing is not None:
        raise _already_active(existing)
    subscription_id = new_id("sub")
    try:
        async with session.begin_nested():
            await repository.insert_subscription(
                session,
                id=subscription_id,
                tenant_id=ctx.tenant_id,
                customer_id=customer.id,
                plan_id=version.plan_id,
                plan_version_id=version.id,
                status=SubscriptionStatus.ACTIVE,
                started_at=window.starts_at,
                current_period_ends_at=window.ends_at,
                canceled_at=None,
                ends_at=None,
                metadata=metadata,
                created_at=ctx.now,
                updated_at=ctx.now,
            )
    except IntegrityError:
        # Another activation for this customer committed first.
        raced = await repository.active_of(session, ctx.tenant_id, customer.id)
        if raced is None:
            raise
        raise _already_active(raced) from None
    await grants.grant_plan(
        session,
        ctx,
        customer,
        version,
        window,
        source=PLAN_SOURCE,
        subscription_id=subscription_id,
        metadata={"subscription_id": subscription_id},
    )
    await eventlog.record(
        session,
        ctx,
        "SubscriptionActivated",
        {
            "subscription_id": subscription_id,
            "plan": version.plan_key,
            "plan_version": version.version,
            "starts_at": window.starts_at.isoformat(),
            "period_ends_at": window.ends_at.isoformat() if window.ends_at else None,
        },
        customer_id=customer.id,
    )
    return await get(session, ctx.tenant_id, subscription_id)


async def renew(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_id: str,
    *,
    period_ends_at: datetime,
) -> Subscription:
    """Extend an active subscription to a new period end. Renewing to the same end is a no-op,
    so a retried renewal never grants twice."""
    row = await _locked(session, ctx.tenant_id, subscription_id)
    if row.status != SubscriptionStatus.ACTIVE:
        raise SubscriptionNotActive(f"subscription {subscription_id} is {row.status}")
    current_end = row.current_period_ends_at
    if current_end is None:
        raise SubscriptionOpenEnded(
            f"subscription {subscription_id} has no period end; there is nothing to renew"
        )
    if period_ends_at == current_end:
        return _subscription(row)
    if period_ends_at < current_end:
        raise InvalidInput(
            "a renewal must move the period end later",
            errors=[
                FieldError(f"must be after {current_end.isoformat()}", pointer="#/period_ends_at")
            ],
        )
    version = catalog.versions[row.plan_version_id]
    customer = await customers.get(session, ctx.tenant_id, row.customer_external_id)
    await grants.grant_plan(
        session,
        ctx,
        customer,
        version,
        Window(current_end, period_ends_at),
        source=PLAN_SOURCE,
        subscription_id=subscription_id,
        metadata={"subscription_id": subscription_id, "renewal": True},
    )
    await repository.update_subscription(
        session, subscription_id, current_period_ends_at=period_ends_at, updated_at=ctx.now
    )
    await eventlog.record(
        session,
        ctx,
        "SubscriptionRenewed",
        {
            "subscription_id": subscription_id,
            "plan": version.plan_key,
            "period_ends_at": period_ends_at.isoformat(),
        },
        customer_id=row.customer_id,
    )
    return await get(session, ctx.tenant_id, subscription_id)


async def cancel(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_id: str,
    *,
    at_period_end: bool,
    reason: str | None,
) -> Subscription:
    """Cancel now (grants end now) or at the period end (grants run out). Idempotent."""
    row = await _locked(session, ctx.tenant_id, subscription_id)
    if row.status == SubscriptionStatus.CANCELED:
        return _subscription(row)
    ends_at = ctx.now
    if at_period_end:
        if row.current_period_ends_at is None:
            raise SubscriptionOpenEnded(
                f"subscription {subscription_id} has no period end; cancel it now instead"
            )
        ends_at = max(row.current_period_ends_at, ctx.now)
    else:
        await grants.revoke_subscription_grants(
            session, ctx, catalog, subscription_id, reason=reason or "subscription canceled"
        )
    await repository.update_subscription(
        session,
        subscription_id,
        status=SubscriptionStatus.CANCELED,
        canceled_at=ctx.now,
        ends_at=ends_at,
        updated_at=ctx.now,
    )
    await eventlog.record(
        session,
        ctx,
        "SubscriptionCancelled",
        {
            "subscription_id": subscription_id,
            "plan": row.plan_key,
            "ends_at": ends_at.isoformat(),
            "at_period_end": at_period_end,
            "reason": reason,
        },
        customer_id=row.customer_id,
    )
    return await get(session, ctx.tenant_id, subscription_id)


async def get(session: AsyncSession, tenant_id: str, subscription_id: str) -> Subscription:
    row = await repository.by_id(session, tenant_id, subscription_id)
    if row is None:
        raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
    return _subscription(row)


async def of_customer(
    session: AsyncSession, tenant_id: str, external_id: str
) -> list[Subscription]:
    customer = await customers.get(session, tenant_id, external_id)
    return [
        _subscription(row) for row in await repository.of_customer(session, tenant_id, customer.id)
    ]


async def _locked(session: AsyncSession, tenant_id: str, subscription_id: str) -> Record:
    row = await repository.by_id(session, tenant_id, subscription_id, lock=True)
    if row is None:
        raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
    return row


def _already_active(row: Record) -> SubscriptionAlreadyActive:
    return SubscriptionAlreadyActive(
        f"customer {row.customer_external_id!r} already has active subscription {row.id} "
        f"on plan {row.plan_key!r}; cancel it first",
        extra={"subscription_id": row.id},
    )


def _subscription(row: Record) -> Subscription:
    return Subscription(
        id=row.id,
        customer=row.customer_external_id,
        plan=row.plan_key,
        plan_version_id=row.plan_version_id,
        status=SubscriptionStatus(row.status),
        started_at=row.started_at,
        current_period_ends_at=row.current_period_ends_at,
        canceled_at=row.canceled_at,
        ends_at=row.ends_at,
        metadata=dict(row.metadata),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
