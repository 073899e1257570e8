"""Subscriptions: create one (billed by invoice, or billed outside Billfold), read them,
and renew one billed outside. The changes a live subscription goes through are in
`billfold.subscriptions.lifecycle`; period close (renewal of billed subscriptions) in
`billfold.billing`.

Every change moves the subscription's plan grant with it, so entitlements follow the
state, and writes its event-log entries in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog, PlanVersion
from billfold.catalog.coupons import Coupon
from billfold.catalog.prices import PlanPrice
from billfold.customers import service as customers
from billfold.customers.service import Customer
from billfold.grants import service as grants
from billfold.grants.service import Window
from billfold.invoicing import issuing as invoicing
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_id
from billfold.money import minor_units
from billfold.subscriptions import charges, repository
from billfold.subscriptions.cycle import BillingCycle, Cycle
from billfold.subscriptions.status import SubscriptionStatus, TransitionNotAllowed

PLAN_SOURCE = "plan"
MAX_QUANTITY = Decimal(1_000_000)


class Billing(StrEnum):
    INVOICE = "invoice"  # Billfold bills it: periods from the price, invoices at each close
    EXTERNAL = "external"  # paid outside Billfold: an admin renews it to a period end


class SubscriptionNotFound(NotFound):
    code = "subscription_not_found"


class SubscriptionAlreadyActive(Conflict):
    code = "subscription_already_active"


class SubscriptionNotActive(TransitionNotAllowed):
    code = "subscription_not_active"


class SubscriptionOpenEnded(Conflict):
    code = "subscription_open_ended"


class PriceNotFound(InvalidInput):
    code = "price_not_found"
    title = "The plan has no price for this currency and interval"


class BilledByPeriodClose(Conflict):
    code = "subscription_billed_by_invoice"
    title = "Billfold renews this subscription at period close"


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
    currency: str | None = None
    interval: str | None = None
    interval_count: int | None = None
    billing_cycle: str | None = None
    billing_anchor: datetime | None = None
    current_period_start: datetime | None = None
    quantity: Decimal = Decimal(1)
    trial_ends_at: datetime | None = None
    cancel_at_period_end: bool = False
    paused_at: datetime | None = None
    scheduled_change: dict[str, Any] | None = None
    discount: dict[str, Any] | None = None

    @property
    def billing(self) -> Billing:
        return Billing.INVOICE if self.currency else Billing.EXTERNAL


@dataclass(frozen=True)
class NewSubscription:
    """What `create` is asked for; every field but `plan` has a default."""

    plan: str
    billing: Billing | None = None  # default: invoice when the plan has prices
    currency: str | None = None  # default: the plan's first price
    interval: str | None = None
    quantity: Decimal = Decimal(1)
    trial_days: int | None = None  # default: the price's trial days
    billing_cycle: BillingCycle = BillingCycle.ANNIVERSARY
    starts_at: datetime | None = None
    period_ends_at: datetime | None = None  # external billing only
    cancel_at_period_end: bool = False  # a trial that lapses unless undone
    metadata: dict[str, Any] | None = None
    coupon: str | None = None  # a code of the plans file's coupons


def coupon_of(catalog: Catalog, code: str) -> Coupon:
    coupon = catalog.coupons.get(code)
    if coupon is None:
        raise charges.CouponNotFound(
            f"no coupon {code!r} in the catalog",
            errors=[FieldError("not a coupon of the plans file", pointer="#/coupon")],
        )
    return coupon


def price_of(version: PlanVersion, currency: str, interval: str | None) -> PlanPrice:
    price = version.price(currency, interval)
    if price is None:
        offered = ", ".join(p.describe() for p in version.prices) or "none"
        raise PriceNotFound(
            f"plan {version.plan_key!r} v{version.version} has no price in {currency}"
            + (f" every {interval}" if interval else "")
            + f" (it has: {offered})",
            errors=[FieldError(f"prices: {offered}", pointer="#/currency")],
        )
    return price


async def create(
    session: AsyncSession, ctx: Context, catalog: Catalog, external_id: str, new: NewSubscription
) -> Subscription:
    """Subscribe a customer to a plan's current version. Billed by invoice, it starts
    trialing or active, on its price's cycle, and an active one is invoiced for its
    first period at once (billed in advance); billed outside, it runs to
    `period_ends_at` (or until canceled)."""
    version = catalog.require_plan(new.plan)
    billing = new.billing or (Billing.INVOICE if version.prices else Billing.EXTERNAL)
    starts_at = new.starts_at or ctx.now
    if not Decimal(0) < new.quantity <= MAX_QUANTITY:
        raise InvalidInput(
            "a quantity is more than 0",
            errors=[FieldError(f"more than 0, at most {MAX_QUANTITY}", pointer="#/quantity")],
        )
    customer = await customers.ensure(session, ctx, external_id)
    existing = await repository.live_of(session, ctx.tenant_id, customer.id)
    if existing is not None:
        raise _already_active(existing)
    subscription_id = new_id("sub")
    values: dict[str, Any] = {
        "id": subscription_id,
        "tenant_id": ctx.tenant_id,
        "customer_id": customer.id,
        "plan_id": version.plan_id,
        "plan_version_id": version.id,
        "started_at": starts_at,
        "canceled_at": None,
        "ends_at": None,
        "metadata": new.metadata or {},
        "quantity": new.quantity,
        "cancel_at_period_end": new.cancel_at_period_end,
        "created_at": ctx.now,
        "updated_at": ctx.now,
    }
    first_period: tuple[datetime, datetime] | None = None
    price: PlanPrice | None = None
    if billing is Billing.EXTERNAL:
        if new.currency is not None or new.trial_days or new.coupon is not None:
            raise InvalidInput(
                "a subscription billed outside Billfold has no currency, trial or coupon here",
                errors=[FieldError("only with billing: invoice", pointer="#/currency")],
            )
        window = Window(starts_at, new.period_ends_at)
        values.update(status=SubscriptionStatus.ACTIVE, current_period_ends_at=window.ends_at)
        if new.cancel_at_period_end:
            values.update(ends_at=window.ends_at)
    else:
        if new.period_ends_at is not None:
            raise InvalidInput(
                "a subscription billed by invoice takes its periods from its price",
                errors=[FieldError("only with billing: external", pointer="#/period_ends_at")],
            )
        if not version.prices:
            raise PriceNotFound(
                f"plan {version.plan_key!r} has no prices; it can only be billed outside "
                "Billfold (billing: external)",
                errors=[FieldError("the plan has no prices", pointer="#/billing")],
            )
        if new.currency is not None:
            minor_units(new.currency, pointer="#/currency")  # unknown_currency, not ISO 4217
        currency = new.currency or version.prices[0].currency
        price = price_of(version, currency, new.interval)
        trial_days = price.trial_days if new.trial_days is None else new.trial_days
        trial_ends_at = starts_at + timedelta(days=trial_days) if trial_days else None
        cycle = Cycle.starting(
            trial_ends_at or starts_at, price.interval, price.interval_count, new.billing_cycle
        )
        values.update(
            currency=price.currency,
            interval=price.interval,
            interval_count=price.interval_count,
            billing_cycle=new.billing_cycle,
            billing_anchor=cycle.anchor,
            trial_ends_at=trial_ends_at,
        )
        if trial_ends_at is not None:
            values.update(
                status=SubscriptionStatus.TRIALING,
                current_period_start=starts_at,
                current_period_ends_at=trial_ends_at,
            )
        else:
            first_period = cycle.period_of(starts_at)
            values.update(
                status=SubscriptionStatus.ACTIVE,
                current_period_start=starts_at,
                current_period_ends_at=first_period[1],
            )
        if new.cancel_at_period_end:
            values.update(ends_at=values["current_period_ends_at"])
        if new.coupon is not None:
            values.update(
                discount=charges.discount_of(coupon_of(catalog, new.coupon), price.currency)
            )
    try:
        async with session.begin_nested():
            await repository.insert_subscription(session, **values)
    except IntegrityError:
        # Another subscription for this customer committed first.
        raced = await repository.live_of(session, ctx.tenant_id, customer.id)
        if raced is None:
            raise
        raise _already_active(raced) from None
    # Billed by invoice, the grant runs until the subscription ends; billed outside, to the
    # period end it was paid to, as a renewal extends it.
    grant_ends = values["ends_at"]
    if billing is Billing.EXTERNAL:
        grant_ends = values["current_period_ends_at"]
    await entitle(session, ctx, catalog, customer, version, subscription_id, starts_at, grant_ends)
    await eventlog.record(
        session,
        ctx,
        "SubscriptionActivated",
        {
            "subscription_id": subscription_id,
            "plan": version.plan_key,
            "plan_version": version.version,
            "status": str(values["status"]),
            "billing": str(billing),
            "currency": values.get("currency"),
            "interval": values.get("interval"),
            "quantity": str(new.quantity),
            "starts_at": starts_at.isoformat(),
            "trial_ends_at": _iso(values.get("trial_ends_at")),
            "period_ends_at": _iso(values["current_period_ends_at"]),
        },
        customer_id=customer.id,
    )
    if first_period is not None and price is not None:
        charge = charges.recurring(
            version, price, new.quantity, first_period, starts_at, first_period[1]
        )
        if charge is not None:
            lines = [charge]
            held = values.get("discount")
            off = charges.discount(held, lines)
            if off is not None and held is not None:
                lines.append(off)
                left = charges.after_use(held)
                await repository.update_subscription(session, subscription_id, discount=left)
            invoice_id = await invoicing.create_draft(
                session,
                ctx,
                invoicing.NewInvoice(
                    customer_id=customer.id,
                    subscription_id=subscription_id,
                    currency=price.currency,
                    reason="subscription_create",
                    period_start=starts_at,
                    period_end=starts_at,
                    charges=lines,
                    finalize_at=ctx.now,
                ),
            )
            assert invoice_id is not None  # a new subscription has no invoice yet
    return await get(session, ctx.tenant_id, subscription_id)


async def entitle(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    customer: Customer,
    version: PlanVersion,
    subscription_id: str,
    starts_at: datetime,
    ends_at: datetime | None,
    *,
    reason: str = "subscription changed",
) -> None:
    """Make the subscription's plan grant `version` over [starts_at, ends_at): its live
    grants are revoked and one grant made in their place."""
    await grants.revoke_subscription_grants(session, ctx, catalog, subscription_id, reason=reason)
    if ends_at is not None and ends_at <= starts_at:
        return
    await grants.grant_plan(
        session,
        ctx,
        customer,
        version,
        Window(starts_at, ends_at),
        source=PLAN_SOURCE,
        subscription_id=subscription_id,
        metadata={"subscription_id": subscription_id},
    )


async def renew(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_id: str,
    *,
    period_ends_at: datetime,
) -> Subscription:
    """Extend a subscription billed outside Billfold to a new period end. Renewing to the
    same end is a no-op, so a retried renewal never grants twice. (Period close renews
    the ones Billfold bills.)"""
    row = await locked(session, ctx.tenant_id, subscription_id)
    if row.currency is not None:
        raise BilledByPeriodClose(
            f"subscription {subscription_id} is billed by invoice; period close renews it"
        )
    if row.status != SubscriptionStatus.ACTIVE:
        raise SubscriptionNotActive(
            f"subscription {subscription_id} is {row.status}", extra={"current_status": row.status}
        )
    current_end = row.current_period_ends_at
    if current_end is None:
        raise SubscriptionOpenEnded(
            f"subscription {subscription_id} has no period end; there is nothing to renew"
        )
    if period_ends_at == current_end:
        return subscription(row)
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


async def get(session: AsyncSession, tenant_id: str, subscription_id: str) -> Subscription:
    row = await repository.by_id(session, tenant_id, subscription_id)
    if row is None:
        raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
    return subscription(row)


async def of_customer(
    session: AsyncSession, tenant_id: str, external_id: str
) -> list[Subscription]:
    customer = await customers.get(session, tenant_id, external_id)
    return [
        subscription(row) for row in await repository.of_customer(session, tenant_id, customer.id)
    ]


async def locked(session: AsyncSession, tenant_id: str, subscription_id: str) -> Record:
    row = await repository.by_id(session, tenant_id, subscription_id, lock=True)
    if row is None:
        raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
    return row


def _already_active(row: Record) -> SubscriptionAlreadyActive:
    return SubscriptionAlreadyActive(
        f"customer {row.customer_external_id!r} already has {row.status} subscription "
        f"{row.id} on plan {row.plan_key!r}; cancel it or change its plan",
        extra={"subscription_id": row.id, "current_status": row.status},
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def subscription(row: Record) -> Subscription:
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
        currency=row.currency,
        interval=row.interval,
        interval_count=row.interval_count,
        billing_cycle=row.billing_cycle,
        billing_anchor=row.billing_anchor,
        current_period_start=row.current_period_start,
        quantity=row.quantity,
        trial_ends_at=row.trial_ends_at,
        cancel_at_period_end=bool(row.cancel_at_period_end),
        paused_at=row.paused_at,
        scheduled_change=row.scheduled_change,
        discount=row.discount,
    )
