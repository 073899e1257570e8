"""What a live subscription goes through: cancel (at the period end, or now with or
without a prorated credit), undo a scheduled cancel, pause and resume, change plan or
quantity (upgrades and downgrades each with their policy), and migrate to a newer plan
version. Every change passes the state machine (`status.require`), moves the plan grant
so entitlements follow the state, and writes its event-log entry.

Money moves through pending lines: a proration charge or credit waits for the
subscription's next invoice, which period close makes (`billfold.billing`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog, PlanVersion
from billfold.customers import service as customers
from billfold.invoicing import pending
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.errors import FieldError, InvalidInput, NotFound
from billfold.pricing import rate
from billfold.subscriptions import charges, repository
from billfold.subscriptions.charges import Proration
from billfold.subscriptions.cycle import Cycle
from billfold.subscriptions.service import (
    MAX_QUANTITY,
    Subscription,
    SubscriptionOpenEnded,
    coupon_of,
    entitle,
    get,
    locked,
    price_of,
)
from billfold.subscriptions.status import SubscriptionStatus as S
from billfold.subscriptions.status import TransitionNotAllowed, require


class When(StrEnum):
    NOW = "now"
    PERIOD_END = "period_end"


@dataclass(frozen=True)
class Policy:
    when: When
    proration: Proration


# Stripe's and Lago's defaults alike: an upgrade now, prorated by day; a downgrade at the
# period end, so nothing paid for is taken away.
UPGRADE = Policy(When.NOW, Proration.DAY)
DOWNGRADE = Policy(When.PERIOD_END, Proration.NONE)


class PlanVersionNotFound(NotFound):
    code = "plan_version_not_found"


async def cancel(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_id: str,
    *,
    at_period_end: bool,
    prorate_credit: bool = False,
    reason: str | None,
) -> Subscription:
    """Cancel at the period end (entitlements run to it; undo with `undo_cancel`) or now
    (entitlements end now; with `prorate_credit`, the unused part of a period paid in
    advance is credited on the final invoice, which the next period close makes)."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    status = S(row.status)
    if at_period_end:
        require(status, status, action="schedule the cancellation of")
        end = row.current_period_ends_at
        if end is None:
            raise SubscriptionOpenEnded(
                f"subscription {subscription_id} has no period end; cancel it now instead"
            )
        if row.cancel_at_period_end:
            return await get(session, ctx.tenant_id, subscription_id)
        await repository.update_subscription(
            session, subscription_id, cancel_at_period_end=True, ends_at=end, updated_at=ctx.now
        )
        if status.grants and row.currency is not None:  # billed outside: it ends there anyway
            await _regrant(session, ctx, catalog, row, catalog.versions[row.plan_version_id], end)
        await _record(
            session, ctx, row, "SubscriptionCancelScheduled", ends_at=end.isoformat(), reason=reason
        )
        return await get(session, ctx.tenant_id, subscription_id)
    require(status, S.CANCELED, action="cancel")
    credit = None
    period_end = row.current_period_ends_at
    if (
        prorate_credit
        and row.currency
        and status is S.ACTIVE
        and period_end
        and ctx.now < period_end
    ):
        version = catalog.versions[row.plan_version_id]
        price = price_of(version, row.currency, row.interval)
        credit = charges.recurring(
            version,
            price,
            row.quantity,
            _period(row),
            ctx.now,
            period_end,
            kind="proration",
            sign=-1,
        )
    if credit is not None:
        await pending.add(session, ctx, row.id, credit)
    await repository.update_subscription(
        session,
        subscription_id,
        status=S.CANCELED,
        canceled_at=ctx.now,
        ends_at=ctx.now,
        cancel_at_period_end=False,
        scheduled_change=None,
        # Billed by invoice, the period ends now: the next close makes the final invoice.
        current_period_ends_at=ctx.now if row.currency else row.current_period_ends_at,
        updated_at=ctx.now,
    )
    await entitle(
        session,
        ctx,
        catalog,
        await customers.get(session, ctx.tenant_id, row.customer_external_id),
        catalog.versions[row.plan_version_id],
        subscription_id,
        ctx.now,
        ctx.now,
        reason=reason or "subscription canceled",
    )
    await _record(
        session,
        ctx,
        row,
        "SubscriptionCancelled",
        ends_at=ctx.now.isoformat(),
        at_period_end=False,
        credit=str(credit.amount_precise) if credit else None,
        reason=reason,
    )
    return await get(session, ctx.tenant_id, subscription_id)


async def undo_cancel(
    session: AsyncSession, ctx: Context, catalog: Catalog, subscription_id: str
) -> Subscription:
    """Take back a cancellation scheduled for the period end."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    status = S(row.status)
    require(status, status, action="undo the cancellation of")
    if not row.cancel_at_period_end:
        raise TransitionNotAllowed(
            f"subscription {subscription_id} has no cancellation scheduled",
            extra={"current_status": status.value, "cancel_at_period_end": False},
        )
    await repository.update_subscription(
        session, subscription_id, cancel_at_period_end=False, ends_at=None, updated_at=ctx.now
    )
    if status.grants and row.currency is not None:
        await _regrant(session, ctx, catalog, row, catalog.versions[row.plan_version_id], None)
    await _record(session, ctx, row, "SubscriptionCancelUndone")
    return await get(session, ctx.tenant_id, subscription_id)


async def pause(
    session: AsyncSession, ctx: Context, catalog: Catalog, subscription_id: str
) -> Subscription:
    """Pause now: entitlements stop, and nothing recurring is billed while paused; the
    unused part of a period paid in advance is credited on the next invoice."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    status = S(row.status)
    require(status, S.PAUSED, action="pause")
    if row.currency and status is S.ACTIVE and row.current_period_ends_at > ctx.now:
        version = catalog.versions[row.plan_version_id]
        credit = charges.recurring(
            version,
            price_of(version, row.currency, row.interval),
            row.quantity,
            _period(row),
            ctx.now,
            row.current_period_ends_at,
            kind="proration",
            sign=-1,
        )
        if credit is not None:
            await pending.add(session, ctx, row.id, credit)
    await repository.update_subscription(
        session, subscription_id, status=S.PAUSED, paused_at=ctx.now, updated_at=ctx.now
    )
    await _regrant(session, ctx, catalog, row, catalog.versions[row.plan_version_id], ctx.now)
    await _record(session, ctx, row, "SubscriptionPaused", paused_at=ctx.now.isoformat())
    return await get(session, ctx.tenant_id, subscription_id)


async def resume(
    session: AsyncSession, ctx: Context, catalog: Catalog, subscription_id: str
) -> Subscription:
    """Resume now: entitlements come back, and the rest of the current period is charged
    on the next invoice."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    require(S(row.status), S.ACTIVE, action="resume")
    if S(row.status) is not S.PAUSED:
        raise TransitionNotAllowed(
            f"subscription {subscription_id} is {row.status}, not paused",
            extra={"current_status": row.status},
        )
    version = catalog.versions[row.plan_version_id]
    if row.currency and row.current_period_ends_at > ctx.now:
        charge = charges.recurring(
            version,
            price_of(version, row.currency, row.interval),
            row.quantity,
            _period(row),
            ctx.now,
            row.current_period_ends_at,
            kind="proration",
        )
        if charge is not None:
            await pending.add(session, ctx, row.id, charge)
    await repository.update_subscription(
        session,
        subscription_id,
        status=S.ACTIVE,
        paused_at=None,
        trial_ends_at=None
        if row.trial_ends_at and row.trial_ends_at > ctx.now
        else row.trial_ends_at,
        updated_at=ctx.now,
    )
    await _regrant(session, ctx, catalog, row, version, grant_end(row))
    await _record(session, ctx, row, "SubscriptionResumed", resumed_at=ctx.now.isoformat())
    return await get(session, ctx.tenant_id, subscription_id)


async def change(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_id: str,
    *,
    plan: str | None,
    quantity: Decimal | None,
    policy: Policy | None = None,
) -> Subscription:
    """Move to another plan (its current version) or quantity. An upgrade (the new
    recurring fee is at least the old) goes by `UPGRADE`, a downgrade by `DOWNGRADE`,
    unless `policy` says otherwise: now, with prorated credit and charge on the next
    invoice, or at the period end."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    status = S(row.status)
    require(status, status, action="change")
    if status in (S.PAUSED, S.SUSPENDED):
        raise TransitionNotAllowed(
            f"cannot change a {status} subscription; resume it first",
            extra={"current_status": status},
        )
    old = catalog.versions[row.plan_version_id]
    new = catalog.require_plan(plan) if plan is not None else old
    new_quantity = quantity if quantity is not None else row.quantity
    if not Decimal(0) < new_quantity <= MAX_QUANTITY:
        raise InvalidInput(
            "a quantity is more than 0",
            errors=[FieldError(f"more than 0, at most {MAX_QUANTITY}", pointer="#/quantity")],
        )
    if new.id == old.id and new_quantity == row.quantity:
        return await get(session, ctx.tenant_id, subscription_id)
    details: dict[str, Any] = {
        "from": {"plan": old.plan_key, "version": old.version, "quantity": str(row.quantity)},
        "to": {"plan": new.plan_key, "version": new.version, "quantity": str(new_quantity)},
    }
    if row.currency is None:  # billed outside: the change is the grant's only
        await _switch(session, ctx, catalog, row, new, new_quantity)
        await _record(session, ctx, row, "SubscriptionChanged", when=When.NOW, **details)
        return await get(session, ctx.tenant_id, subscription_id)
    old_price = price_of(old, row.currency, row.interval)
    new_price = price_of(new, row.currency, row.interval)
    if new_price.interval_count != old_price.interval_count:
        raise InvalidInput(
            "a change keeps the billing interval; cancel and subscribe again to change it",
            errors=[FieldError("no price on the same interval", pointer="#/plan")],
        )
    before = rate(old_price.recurring, row.quantity) if old_price.recurring else Decimal(0)
    after = rate(new_price.recurring, new_quantity) if new_price.recurring else Decimal(0)
    upgrade = after >= before
    chosen = policy or (UPGRADE if upgrade else DOWNGRADE)
    details.update(upgrade=upgrade, when=chosen.when, proration=chosen.proration)
    if chosen.when is When.PERIOD_END:
        scheduled = {"plan_version_id": new.id, "quantity": str(new_quantity)}
        await repository.update_subscription(
            session, subscription_id, scheduled_change=scheduled, updated_at=ctx.now
        )
        await _record(session, ctx, row, "SubscriptionChanged", **details)
        return await get(session, ctx.tenant_id, subscription_id)
    end = row.current_period_ends_at
    if status is S.ACTIVE and ctx.now < end and chosen.proration is not Proration.NONE:
        period = _period(row)
        credit = None
        if chosen.proration is not Proration.FULL:
            credit = charges.recurring(
                old,
                old_price,
                row.quantity,
                period,
                ctx.now,
                end,
                proration=chosen.proration,
                kind="proration",
                sign=-1,
            )
        charge = charges.recurring(
            new,
            new_price,
            new_quantity,
            period,
            ctx.now,
            end,
            proration=chosen.proration,
            kind="proration",
        )
        for line in (credit, charge):
            if line is not None:
                await pending.add(session, ctx, row.id, line)
    await _switch(session, ctx, catalog, row, new, new_quantity)
    await _record(session, ctx, row, "SubscriptionChanged", **details)
    return await get(session, ctx.tenant_id, subscription_id)


async def mark_past_due(
    session: AsyncSession, ctx: Context, catalog: Catalog, subscription_id: str, invoice: str
) -> Subscription:
    """An invoice of the subscription is overdue: past_due. Entitlements stay."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    require(S(row.status), S.PAST_DUE, action="mark past due")
    await repository.update_subscription(
        session, subscription_id, status=S.PAST_DUE, updated_at=ctx.now
    )
    await _record(session, ctx, row, "SubscriptionPastDue", invoice_id=invoice)
    return await get(session, ctx.tenant_id, subscription_id)


async def suspend(
    session: AsyncSession, ctx: Context, catalog: Catalog, subscription_id: str, invoice: str
) -> Subscription:
    """Overdue for longer than the grace dunning gives: suspended, entitlements stop."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    require(S(row.status), S.SUSPENDED, action="suspend")
    await repository.update_subscription(
        session, subscription_id, status=S.SUSPENDED, updated_at=ctx.now
    )
    await _regrant(session, ctx, catalog, row, catalog.versions[row.plan_version_id], ctx.now)
    await _record(session, ctx, row, "SubscriptionSuspended", invoice_id=invoice)
    return await get(session, ctx.tenant_id, subscription_id)


async def reactivate(
    session: AsyncSession, ctx: Context, catalog: Catalog, subscription_id: str
) -> Subscription:
    """Nothing is overdue any more (paid, credited, voided or written off): active again,
    and a suspended subscription's entitlements come back."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    status = S(row.status)
    require(status, S.ACTIVE, action="reactivate")
    await repository.update_subscription(
        session, subscription_id, status=S.ACTIVE, updated_at=ctx.now
    )
    if not status.grants:
        await _regrant(
            session, ctx, catalog, row, catalog.versions[row.plan_version_id], grant_end(row)
        )
    await _record(session, ctx, row, "SubscriptionReactivated", was=status.value)
    return await get(session, ctx.tenant_id, subscription_id)


async def apply_coupon(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_id: str,
    code: str | None,
) -> Subscription:
    """Put a coupon on the subscription (from its next invoice on), replacing any it has,
    or take it off (`code` None). The subscription keeps the coupon as it is now."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    status = S(row.status)
    require(status, status, action="discount")
    if row.currency is None:
        raise InvalidInput(
            "a subscription billed outside Billfold takes no coupon",
            errors=[FieldError("only with billing: invoice", pointer="#/coupon")],
        )
    held = charges.discount_of(coupon_of(catalog, code), row.currency) if code else None
    await repository.update_subscription(
        session, subscription_id, discount=held, updated_at=ctx.now
    )
    await _record(session, ctx, row, "SubscriptionChanged", coupon=code)
    return await get(session, ctx.tenant_id, subscription_id)


async def apply_scheduled(
    session: AsyncSession, ctx: Context, catalog: Catalog, row: Record
) -> Record:
    """At a period's end: the change scheduled for it takes effect (period close calls
    this before it bills the next period). Returns the row as it now is."""
    scheduled = row.scheduled_change
    if not scheduled:
        return row
    version = catalog.versions.get(scheduled["plan_version_id"])
    if version is not None:
        await _switch(session, ctx, catalog, row, version, Decimal(scheduled["quantity"]))
    await repository.update_subscription(session, row.id, scheduled_change=None, updated_at=ctx.now)
    fresh = await locked(session, ctx.tenant_id, row.id)
    return fresh


async def migrate(
    session: AsyncSession, ctx: Context, catalog: Catalog, plan_key: str, to_version: int
) -> list[str]:
    """Move every live subscription of a plan onto version `to_version` of it (they stay
    on their version until this runs: grandfathering). Returns the moved ids. The new
    version's price applies from the next period; entitlements change now."""
    plan = catalog.plans.get(plan_key)
    target = next(
        (
            v
            for v in catalog.versions.values()
            if plan is not None and v.plan_id == plan.id and v.version == to_version
        ),
        None,
    )
    if plan is None or target is None:
        raise PlanVersionNotFound(
            f"plan {plan_key!r} has no version {to_version}",
            errors=[FieldError("not a version of the plan", pointer="#/to_version")],
        )
    moved = []
    for version in catalog.versions.values():
        if version.plan_id != plan.id or version.id == target.id:
            continue
        for subscription_id in await repository.on_version(
            session, ctx.tenant_id, plan.id, version.id
        ):
            row = await locked(session, ctx.tenant_id, subscription_id)
            if row.currency is not None:
                price_of(target, row.currency, row.interval)  # refuses before anything moves
            await _switch(session, ctx, catalog, row, target, row.quantity)
            await _record(
                session,
                ctx,
                row,
                "SubscriptionChanged",
                migration=True,
                **{
                    "from": {"plan": plan_key, "version": version.version},
                    "to": {"plan": plan_key, "version": to_version},
                },
            )
            moved.append(subscription_id)
    return moved


async def _switch(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    row: Record,
    version: PlanVersion,
    quantity: Decimal,
) -> None:
    await repository.update_subscription(
        session,
        row.id,
        plan_id=version.plan_id,
        plan_version_id=version.id,
        quantity=quantity,
        updated_at=ctx.now,
    )
    if version.id != row.plan_version_id and S(row.status).grants:
        await _regrant(session, ctx, catalog, row, version, grant_end(row))


def grant_end(row: Record) -> datetime | None:
    """Where the plan grant of a granting subscription ends: billed outside, at the
    period end it was paid to; billed by invoice, at a scheduled cancellation, or never."""
    ends: datetime | None = row.ends_at
    if row.currency is None:
        return ends or row.current_period_ends_at
    return ends if row.cancel_at_period_end else None


async def _regrant(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    row: Record,
    version: PlanVersion,
    ends_at: datetime | None,
) -> None:
    customer = await customers.get(session, ctx.tenant_id, row.customer_external_id)
    await entitle(session, ctx, catalog, customer, version, row.id, ctx.now, ends_at)


def _period(row: Record) -> tuple[datetime, datetime]:
    """The whole billing period the subscription is in (for prorations): its cycle's
    period, which a first calendar period only part-fills."""
    cycle = Cycle(row.billing_anchor, row.interval, row.interval_count)
    start = max(row.current_period_start, row.billing_anchor)
    return cycle.period_of(start)


async def _record(session: AsyncSession, ctx: Context, row: Record, kind: Any, **data: Any) -> None:
    await eventlog.record(
        session,
        ctx,
        kind,
        {"subscription_id": row.id, "plan": row.plan_key, **data},
        customer_id=row.customer_id,
    )
