"""Routes: activate, renew and cancel subscriptions (admin, entitlement-first)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field

from billfold.http.bodies import json_body_schema, read_json, read_optional_json
from billfold.http.calls import AdminCall, ReadCall, idempotent
from billfold.kit.ids import ID_PATTERN
from billfold.kit.schemas import Body, Instant, Metadata, Out, Storable
from billfold.subscriptions import service
from billfold.subscriptions.service import Subscription
from billfold.subscriptions.status import SubscriptionStatus

router = APIRouter(tags=["subscriptions"])
ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
SubscriptionId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]


class ActivateIn(Body):
    plan: Annotated[str, Field(min_length=1, max_length=100)]
    starts_at: Instant | None = None
    period_ends_at: Instant | None = None
    metadata: Metadata = Field(default_factory=dict)


class RenewIn(Body):
    period_ends_at: Instant


class CancelIn(Body):
    at_period_end: bool = False
    reason: Annotated[str, Field(max_length=500), Storable] | None = None


class SubscriptionOut(Out):
    id: str
    customer: str
    plan: str
    plan_version: int | None
    status: SubscriptionStatus
    started_at: datetime
    current_period_ends_at: datetime | None
    canceled_at: datetime | None
    ends_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class SubscriptionsOut(Out):
    customer: str
    subscriptions: list[SubscriptionOut]


async def _out(call: ReadCall | AdminCall, subscription: Subscription) -> SubscriptionOut:
    version = (await call.catalog()).versions.get(subscription.plan_version_id)
    fields = {k: v for k, v in subscription.__dict__.items() if k != "plan_version_id"}
    return SubscriptionOut(plan_version=version.version if version else None, **fields)


@router.post(
    "/v1/customers/{external_id}/subscriptions",
    operation_id="activateSubscription",
    responses={
        404: {"description": "`plan_not_found`"},
        409: {"description": "`subscription_already_active` or `idempotency_key_in_flight`"},
    },
    status_code=201,
    openapi_extra=json_body_schema(ActivateIn),
)
@idempotent
async def activate(external_id: ExternalId, call: AdminCall) -> SubscriptionOut:
    """Activate a plan for a customer; the plan's grant follows the subscription."""
    body = await read_json(call.request, ActivateIn)
    subscription = await service.activate(
        call.session,
        call.ctx,
        await call.catalog(),
        external_id,
        body.plan,
        starts_at=body.starts_at,
        period_ends_at=body.period_ends_at,
        metadata=body.metadata,
    )
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
        409: {"description": "`subscription_not_active` or `subscription_open_ended`"},
    },
    openapi_extra=json_body_schema(RenewIn),
)
async def renew(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    body = await read_json(call.request, RenewIn)
    subscription = await service.renew(
        call.session,
        call.ctx,
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
        409: {"description": "`subscription_not_active`"},
    },
    openapi_extra=json_body_schema(CancelIn, required=False),
)
async def cancel(subscription_id: SubscriptionId, call: AdminCall) -> SubscriptionOut:
    body = await read_optional_json(call.request, CancelIn) or CancelIn()
    subscription = await service.cancel(
        call.session,
        call.ctx,
        await call.catalog(),
        subscription_id,
        at_period_end=body.at_period_end,
        reason=body.reason,
    )
    return await _out(call, subscription)
