"""Routes: effective entitlements, the check API, plugin access, and grants."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime
from pydantic_core import to_json

from billfold.catalog.catalog import Catalog
from billfold.catalog.model import FeatureType
from billfold.customers import service as customers
from billfold.deps import AdminCall, Call, CheckCall, ReadCall, idempotent, short_path
from billfold.entitlements import repository, rules, service
from billfold.entitlements.schemas import (
    CheckIn,
    CheckOut,
    EntitlementOut,
    EntitlementsOut,
    GrantIn,
    GrantOut,
    GrantsOut,
    PluginOut,
    RevokeIn,
    SourceOut,
    UsageOut,
)
from billfold.entitlements.service import CheckResult, FeatureNotFound, GrantNotFound, Window
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.http import json_body_schema, json_response, read_json
from billfold.kit.ids import ID_PATTERN
from billfold.metering import quotas
from billfold.metering import service as metering
from billfold.metering.quota import BEGINNING, NEVER, Enforcement, Standing

router = APIRouter(tags=["entitlements"])

ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
GrantId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
PLUGIN_FEATURE = "plugins"
JSON = "application/json"


@router.get("/v1/customers/{external_id}/entitlements")
async def customer_entitlements(
    external_id: ExternalId,
    call: ReadCall,
    at: Annotated[AwareDatetime | None, Query(description="resolve at this instant")] = None,
) -> EntitlementsOut:
    """`limits(userId)`: every feature's effective value and the grants it came from."""
    customers.check_external_id(external_id)
    resolved = await service.entitlements_of(
        call.session,
        await call.catalog(),
        call.ctx.tenant_id,
        external_id,
        at or call.ctx.now,
        snapshots=call.snapshots if at is None else None,
    )
    out = {k: EntitlementOut.of(v) for k, v in resolved.entitlements.items()}
    if at is None:  # quota usage is known for the present only
        catalog = await call.catalog()
        settings = call.services.settings
        for key, entitlement in resolved.entitlements.items():
            if entitlement.feature.type is FeatureType.METERED:
                quota = quotas.quota_of(catalog, key)
                here = await quotas.position(
                    call.session, catalog, call.ctx.tenant_id, external_id, quota, call.ctx.now
                )
                mode = quotas.effective_enforcement(
                    quota.policy, settings.enforcement, settings.mode == "platform"
                )
                out[key].usage = usage_out(here.standing, mode)
    return EntitlementsOut(
        customer=external_id, known=resolved.known, at=resolved.moment, entitlements=out
    )


def usage_out(standing: Standing, mode: Enforcement) -> UsageOut:
    return UsageOut(
        used=quotas.show(standing.used),
        remaining=quotas.show(standing.remaining),
        limit=quotas.show(standing.limit),
        overage=quotas.show(standing.overage),
        resets_at=standing.resets_at,
        enforcement=mode.value,
    )


@router.post(
    "/v1/entitlements/check", response_model=CheckOut, openapi_extra=json_body_schema(CheckIn)
)
@short_path
async def check(request: Request, call: CheckCall) -> Response:
    """`hasEntitlement(userId, key)`. A denial is a normal answer: `allowed: false`."""
    body = await read_json(request, CheckIn)
    customers.check_external_id(body.customer, pointer="#/customer")
    catalog = await call.catalog()
    definition = catalog.features.get(body.feature)
    if definition is not None and definition.type is FeatureType.METERED:
        result = await _check_quota(call, body)
    else:
        current = body.current
        if current is None and definition is not None and definition.config.get("meter"):
            current = await _gauge(call, catalog, body.customer, definition.config["meter"])
        result = await service.check(
            call.unit,
            catalog,
            call.ctx.tenant_id,
            body.customer,
            body.feature,
            requested=body.requested,
            current=current,
            moment=call.ctx.now,
            snapshots=call.snapshots,
        )
    return Response(to_json(CheckOut.payload(body.customer, result)), media_type=JSON)


async def _gauge(call: Call, catalog: Catalog, customer: str, meter: str) -> int:
    """A limit's current count from its meter (for example spaces created minus spaces
    deleted), so the product keeps no counter of its own."""
    report = await metering.usage(
        call.unit.session, catalog, call.ctx.tenant_id, customer, meter, BEGINNING, NEVER
    )
    value = report.buckets[0].value if report.buckets else Decimal(0)
    return max(math.ceil(value), 0)


async def _check_quota(call: Call, body: CheckIn) -> CheckResult:
    """May the customer use `requested` (default 1) more of a metered feature now?
    Records nothing: `POST /v1/entitlements/consume` checks and records in one step."""
    if body.current is not None or isinstance(body.requested, str):
        raise InvalidInput(
            "a metered feature takes `requested`: the amount to use; Billfold counts the rest",
            errors=[FieldError("not used by a metered feature", pointer="#/current")],
        )
    catalog = await call.catalog()
    quota = quotas.quota_of(catalog, body.feature)
    here = await quotas.position(
        call.unit.session,
        catalog,
        call.ctx.tenant_id,
        body.customer,
        quota,
        call.ctx.now,
        snapshots=call.snapshots,
    )
    amount = Decimal(body.requested or 1)
    remaining = here.standing.remaining
    allowed = remaining is None or remaining >= amount
    return CheckResult(
        body.feature,
        FeatureType.METERED,
        allowed,
        here.entitlement.value,
        quotas.show(remaining),
        "within_quota" if allowed else "quota_exhausted",
        here.entitlement.source,
    )


@router.get("/v1/customers/{external_id}/plugins/{name}", response_model=PluginOut)
async def plugin_access(
    external_id: ExternalId,
    name: Annotated[str, Path(min_length=1, max_length=200)],
    call: CheckCall,
    feature: Annotated[str, Query(max_length=100)] = PLUGIN_FEATURE,
) -> Response:
    """`is_plugin_accessible(user, plugin)`, answered from a `pattern` feature."""
    customers.check_external_id(external_id)
    catalog = await call.catalog()
    definition = catalog.features.get(feature)
    if definition is None or definition.type is not FeatureType.PATTERN:
        raise FeatureNotFound(
            f"no pattern feature {feature!r} in the catalog",
            errors=[FieldError("expected a pattern feature", parameter="feature")],
        )
    resolved = await service.entitlements_of(
        call.unit,
        catalog,
        call.ctx.tenant_id,
        external_id,
        call.ctx.now,
        snapshots=call.snapshots,
        keys=[feature],
    )
    match = rules.matching_pattern(resolved.entitlements[feature], name)
    return json_response(
        PluginOut(
            customer=external_id,
            plugin=name,
            feature=feature,
            allowed=match is not None,
            matched_pattern=match[0] if match else None,
            source=SourceOut.of(match[1]) if match else None,
        )
    )


@router.post("/v1/customers/{external_id}/grants", status_code=201)
@idempotent
async def create_grant(external_id: ExternalId, body: GrantIn, call: AdminCall) -> GrantOut:
    """Grant a plan or a single feature to a customer, for a window or open-ended."""
    customers.check_external_id(external_id)
    if (body.plan is None) == (body.feature is None):
        raise InvalidInput(
            "grant either a plan or a feature",
            errors=[FieldError("give exactly one of plan and feature", pointer="#/plan")],
        )
    if body.ends_at is not None and body.duration_days is not None:
        raise InvalidInput(
            "give ends_at or duration_days, not both",
            errors=[FieldError("conflicts with ends_at", pointer="#/duration_days")],
        )
    starts_at = body.starts_at or call.ctx.now
    ends_at = body.ends_at
    if body.duration_days is not None:
        ends_at = starts_at + timedelta(days=body.duration_days)
    window = Window(starts_at, ends_at)
    catalog = await call.catalog()
    customer = await customers.ensure(call.session, call.ctx, external_id)
    if body.plan is not None:
        if body.value is not None:
            raise InvalidInput(
                "a plan grant takes no value",
                errors=[FieldError("only for feature grants", pointer="#/value")],
            )
        grant = await service.grant_plan(
            call.session,
            call.ctx,
            customer,
            service.plan_version(catalog, body.plan),
            window,
            source=body.source,
            priority=body.priority,
            metadata=body.metadata,
        )
    else:
        assert body.feature is not None
        if body.value is None:
            raise InvalidInput(
                "a feature grant needs a value",
                errors=[FieldError("required with feature", pointer="#/value")],
            )
        grant = await service.grant_feature(
            call.session,
            call.ctx,
            catalog,
            customer,
            body.feature,
            body.value,
            window,
            source=body.source,
            priority=body.priority,
            metadata=body.metadata,
        )
    return GrantOut.of(catalog, external_id, grant, call.ctx.now)


@router.get("/v1/customers/{external_id}/grants")
async def list_grants(
    external_id: ExternalId,
    call: ReadCall,
    state: Annotated[Literal["live", "all"], Query()] = "all",
) -> GrantsOut:
    customers.check_external_id(external_id)
    catalog = await call.catalog()
    grants = await service.grants_of(
        call.session, catalog, call.ctx, external_id, live_only=state == "live"
    )
    return GrantsOut(
        customer=external_id,
        grants=[GrantOut.of(catalog, external_id, g, call.ctx.now) for g in grants],
    )


@router.get("/v1/grants/{grant_id}")
async def get_grant(grant_id: GrantId, call: ReadCall) -> GrantOut:
    catalog = await call.catalog()
    row = await repository.by_id(call.session, call.ctx.tenant_id, grant_id)
    if row is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    return await _grant_out(call, service.grant_from_row(catalog, row))


@router.post("/v1/grants/{grant_id}/revoke")
async def revoke_grant(
    grant_id: GrantId, call: AdminCall, body: RevokeIn | None = None
) -> GrantOut:
    """End a grant now. Revoking it again answers the same."""
    grant = await service.revoke(
        call.session, call.ctx, await call.catalog(), grant_id, reason=body.reason if body else None
    )
    return await _grant_out(call, grant)


async def _grant_out(call: ReadCall | AdminCall, grant: rules.Grant) -> GrantOut:
    external_id = await customers.external_id_of(
        call.session, call.ctx.tenant_id, grant.customer_id
    )
    return GrantOut.of(await call.catalog(), external_id, grant, call.ctx.now)
