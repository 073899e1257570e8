"""Routes: effective entitlements, the check API, plugin access, and grants."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime

from billfold.catalog.model import FeatureType
from billfold.customers import service as customers
from billfold.deps import AdminCall, CheckCall, ReadCall, idempotent
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
)
from billfold.entitlements.service import FeatureNotFound, GrantNotFound, Window
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.http import json_body_schema, json_response, read_json
from billfold.kit.ids import ID_PATTERN

router = APIRouter(tags=["entitlements"])

ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
GrantId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
PLUGIN_FEATURE = "plugins"


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
    return EntitlementsOut(
        customer=external_id,
        known=resolved.known,
        at=resolved.moment,
        entitlements={k: EntitlementOut.of(v) for k, v in resolved.entitlements.items()},
    )


@router.post(
    "/v1/entitlements/check", response_model=CheckOut, openapi_extra=json_body_schema(CheckIn)
)
async def check(request: Request, call: CheckCall) -> Response:
    """`hasEntitlement(userId, key)`. A denial is a normal answer: `allowed: false`."""
    body = await read_json(request, CheckIn)
    customers.check_external_id(body.customer, pointer="#/customer")
    result = await service.check(
        call.unit,
        await call.catalog(),
        call.ctx.tenant_id,
        body.customer,
        body.feature,
        requested=body.requested,
        current=body.current,
        moment=call.ctx.now,
        snapshots=call.snapshots,
    )
    return json_response(CheckOut.of(body.customer, result))


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
