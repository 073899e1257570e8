"""Routes: create subscriptions and take them through their lifecycle (admin)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.customers import clocks
from billfold.http.bodies import json_body_schema, read_json, read_optional_json
from billfold.http.calls import AdminCall, ReadCall, idempotent
from billfold.kit.context import Context
from billfold.kit.ids import ID_PATTERN
from billfold.kit.schemas import QUANTITY, Body, Instant, Metadata, Out, Storable
from billfold.subscriptions import lifecycle, service
from billfold.subscriptions.charges import Proration
from billfold.subscriptions.cycle import BillingCycle
from billfold.subscriptions.lifecycle import Policy, When
from billfold.subscriptions.service import Billing, NewSubscription, Subscription
from billfold.subscriptions.status import SubscriptionStatus

router = APIRouter(tags=["subscriptions"])
ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
SubscriptionId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
CONFLICTS = "`subscription_transition_not_allowed` (with the `current_status`)"


class CreateIn(Body):
    plan: Annotated[str, Field(min_length=1, max_length=100)]
    billing: Billing | None = Field(
        None, description="invoice (default when the plan has prices) or external"
    )
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = Field(
        None, description="ISO 4217; default: the plan's first price"
    )
    interval: Annotated[str, Field(pattern=r"^(day|week|month|year)$")] | None = None
    quantity: Annotated[Decimal, Field(gt=0, max_digits=30, decimal_places=12), QUANTITY] = Decimal(
        1
    )
    trial_days: Annotated[int, Field(ge=0, le=730)] | None = Field(
        None, description="default: the price's trial days"
    )
    billing_cycle: BillingCycle = BillingCycle.ANNIVERSARY
    starts_at: Instant | None = None
    period_ends_at: Instant | None = Field(None, description="billing: external only")
    cancel_at_period_end: bool = False
    metadata: Metadata = Field(default_factory=dict)
    coupon: Annotated[str, Field(min_length=1, max_length=40)] | None = Field(
        default=None, description="a code of the plans file's coupons"
    )


class CouponIn(Body):
    coupon: Annotated[str, Field(min_length=1, max_length=40)] | None = Field(
        description="a coupon code; null takes the discount off"
    )


class RenewIn(Body):
    period_ends_at: Instant


class CancelIn(Body):
    at_period_end: bool = False
    prorate_credit: bool = Field(
        default=False, description="now only: credit the unused part of a period paid in advance"
    )
    reason: Annotated[str, Field(max_length=500), Storable] | None = None


class PolicyIn(Body):
    when: When
    proration: Proration = Proration.DAY


class ChangeIn(Body):
    plan: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    quantity: Annotated[Decimal, Field(gt=0, max_digits=30, decimal_places=12), QUANTITY] | None = (
        None
    )
    policy: PolicyIn | None = Field(
        None,
        description="default: an upgrade now, prorated by day; a downgrade at the period end",
    )


class SubscriptionOut(Out):
    id: str
    customer: str
    plan: str
    plan_version: int | None
    status: SubscriptionStatus
    billing: Billing
    currency: str | None
    interval: str | None
    interval_count: int | None
    billing_cycle: str | None
    quantity: str
    started_at: datetime
    trial_ends_at: datetime | None
    current_period_start: datetime | None
    current_period_ends_at: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ends_at: datetime | None
    paused_at: datetime | None
    scheduled_change: dict[str, Any] | None
    discount: dict[str, Any] | None = Field(
        default=None, description="the coupon as applied, with its periods_left"
    )
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class SubscriptionsOut(Out):
    customer: str
    subscriptions: list[SubscriptionOut]


async def _their_time(call: AdminCall, subscription_id: str) -> Context:
    """The call's context at the customer's time: a test clock's, for a test-mode one."""
    subscription = await service.get(call.session, call.ctx.tenant_id, subscription_id)
    return await clocks.context_for(call.session, call.ctx, subscription.customer)


async def _now(
    call: AdminCall,
    subscription_id: str,
    action: Callable[[AsyncSession, Context, Catalog, str], Awaitable[Subscription]],
) -> SubscriptionOut:
    """A lifecycle action that takes nothing but the subscription, at the customer's time."""
    ctx = await _their_time(call, subscription_id)
    return await _out(call, await action(call.session, ctx, await call.catalog(), subscription_id))


async def _out(call: ReadCall | AdminCall, subscription: Subscription) -> SubscriptionOut:
    catalog = await call.catalog()
    version = catalog.versions.get(subscription.plan_version_id)
    scheduled = subscription.scheduled_change
    if scheduled:
        target = catalog.versions.get(scheduled["plan_version_id"])
        scheduled = {
            "plan": target.plan_key if target else None,
            "plan_version": target.version if target else None,
            "quantity": scheduled["quantity"],
            "at": subscription.current_period_ends_at,
        }
    fields = {
        k: v
        for k, v in subscription.__dict__.items()
        if k not in ("plan_version_id", "quantity", "scheduled_change", "billing_anchor")
    }
    return SubscriptionOut(
        plan_version=version.version if version else None,
        billing=subscription.billing,
        quantity=format(subscription.quantity.normalize(), "f"),
        scheduled_change=scheduled,
        **fields,
    )


@router.post(
    "/v1/customers/{external_id}/subscriptions",
    operation_id="activateSubscription",
    responses={
        404: {"description": "`plan_not_found`"},
        409: {"description": "`subscription_already_active` or `idempotency_key_in_flight`"},
        422: {"description": "`price_not_found`, `invalid_input`"},
    },
    status_code=201,
    openapi_extra=json_body_schema(CreateIn),
)
@idempotent
async def activate(external_id: ExternalId, call: AdminCall) -> SubscriptionOut:
    """Subscribe a customer to a plan. Billed by invoice (the default for a plan with
    prices), it starts trialing or active and its first period is invoiced at once;
    billed outside Billfold, it runs to `period_ends_at`. The plan's grant follows it."""
    body = await read_json(call.request, CreateIn)
    new = NewSubscription(**body.model_dump())
    ctx = await clocks.context_for(call.session, call.ctx, external_id)
    subscription = await service.create(call.session, ctx, await call.catalog(), external_id, new)
    return await _out(call, subscription)


@router.get(
    "/v1/customers/{external_id}/subscriptions",
    operation_id="listSubscriptions",
    responses={404: {"description": "`customer_not_found`"}},
)
async def customer_subscriptions(external_id: ExternalId, call: ReadCall) -> SubscriptionsOut:
    found = await service.of_customer(call.session, call.ctx.tenant_id, external_id)
    return SubscriptionsOut(
        customer=external_id, subscriptions=[await _out(call, s) for s in found]
    )


@router.get(
    "/v1/subscriptions/{subscription_id}",
    operation_id="getSubscription",
    responses={404: {"description": "`subscription_not_found`"}},
)
async def get_subscription(subscription_id: SubscriptionId, call: ReadCall) -> SubscriptionOut:
    return await _out(call, await service.get(call.session, call.ctx.tenant_id, subscription_id))


@router.post(
    "/v1/subscriptions/{subscription_id}/renew",
    operation_id="renewSubscription",
    responses={
        404: {"description": "`subscription_not_found`"},
        409: {
            "description": "`subscription_not_active`, `subscription_open_ended` or "
            "`subscription_billed_by_invoice`"
        },
    },
    openapi_extra=json_body_schema(RenewIn),
)
async def renew(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    """Extend a subscription billed outside Billfold to a new period end."""
    body = await read_json(call.request, RenewIn)
    subscription = await service.renew(
        call.session,
        await _their_time(call, subscription_id),
        await call.catalog(),
        subscription_id,
        period_ends_at=body.period_ends_at,
    )
    return await _out(call, subscription)


@router.post(
    "/v1/subscriptions/{subscription_id}/cancel",
    operation_id="cancelSubscription",
    responses={
        404: {"description": "`subscription_not_found`"},
        409: {"description": f"{CONFLICTS} or `subscription_open_ended`"},
    },
    openapi_extra=json_body_schema(CancelIn, required=False),
)
async def cancel(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    """Cancel now (entitlements end now) or at the period end (undo with
    `undo-cancel`)."""
    body = await read_optional_json(call.request, CancelIn) or CancelIn()
    subscription = await lifecycle.cancel(
        call.session,
        await _their_time(call, subscription_id),
        await call.catalog(),
        subscription_id,
        at_period_end=body.at_period_end,
        prorate_credit=body.prorate_credit,
        reason=body.reason,
    )
    return await _out(call, subscription)


@router.post(
    "/v1/subscriptions/{subscription_id}/undo-cancel",
    operation_id="undoCancelSubscription",
    responses={404: {"description": "`subscription_not_found`"}, 409: {"description": CONFLICTS}},
)
async def undo_cancel(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    """Take back a cancellation scheduled for the period end."""
    return await _now(call, subscription_id, lifecycle.undo_cancel)


@router.post(
    "/v1/subscriptions/{subscription_id}/pause",
    operation_id="pauseSubscription",
    responses={404: {"description": "`subscription_not_found`"}, 409: {"description": CONFLICTS}},
)
async def pause(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    """Pause now: entitlements stop and nothing recurring is billed until it resumes."""
    return await _now(call, subscription_id, lifecycle.pause)


@router.post(
    "/v1/subscriptions/{subscription_id}/resume",
    operation_id="resumeSubscription",
    responses={404: {"description": "`subscription_not_found`"}, 409: {"description": CONFLICTS}},
)
async def resume(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    """Resume a paused subscription now; the rest of the period is charged."""
    return await _now(call, subscription_id, lifecycle.resume)


@router.post(
    "/v1/subscriptions/{subscription_id}/change",
    operation_id="changeSubscription",
    responses={
        404: {"description": "`subscription_not_found` or `plan_not_found`"},
        409: {"description": CONFLICTS},
        422: {"description": "`price_not_found`, `invalid_input`"},
    },
    openapi_extra=json_body_schema(ChangeIn),
)
async def change(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    """Change the plan or the quantity: an upgrade now, prorated by day; a downgrade at
    the period end; or as `policy` says."""
    body = await read_json(call.request, ChangeIn)
    policy = Policy(body.policy.when, body.policy.proration) if body.policy else None
    subscription = await lifecycle.change(
        call.session,
        await _their_time(call, subscription_id),
        await call.catalog(),
        subscription_id,
        plan=body.plan,
        quantity=body.quantity,
        policy=policy,
    )
    return await _out(call, subscription)


@router.post(
    "/v1/subscriptions/{subscription_id}/discount",
    operation_id="discountSubscription",
    responses={
        404: {"description": "`subscription_not_found` or `coupon_not_found`"},
        409: {"description": CONFLICTS},
        422: {"description": "`coupon_currency_mismatch`, `invalid_input`"},
    },
    openapi_extra=json_body_schema(CouponIn),
)
async def discount(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    """Put a coupon on the subscription from its next invoice on (replacing any), or take
    it off with `{"coupon": null}`."""
    body = await read_json(call.request, CouponIn)
    subscription = await lifecycle.apply_coupon(
        call.session,
        await _their_time(call, subscription_id),
        await call.catalog(),
        subscription_id,
        body.coupon,
    )
    return await _out(call, subscription)
