"""Routes: grant a plan or a feature to a customer, list and read grants, revoke one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from billfold.customers import service as customers
from billfold.grants import service
from billfold.grants.resolution import Grant
from billfold.grants.schemas import GrantIn, GrantOut, GrantsOut, RevokeIn
from billfold.http.bodies import json_body_schema, read_json, read_optional_json
from billfold.http.calls import AdminCall, ReadCall, idempotent
from billfold.kit.ids import ID_PATTERN

router = APIRouter(tags=["grants"])

ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
GrantId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]


@router.post(
    "/v1/customers/{external_id}/grants",
    operation_id="createGrant",
    responses={
        404: {"description": "`plan_not_found` or `feature_not_found`"},
        409: {"description": "`idempotency_key_in_flight`"},
    },
    status_code=201,
    openapi_extra=json_body_schema(GrantIn),
)
@idempotent
async def create_grant(external_id: ExternalId, call: AdminCall) -> GrantOut:
    """Grant a plan or a single feature to a customer, for a window or open-ended."""
    body = await read_json(call.request, GrantIn)
    catalog = await call.catalog()
    grant = await service.create(call.session, call.ctx, catalog, external_id, body)
    return GrantOut.of(catalog, external_id, grant, call.ctx.now)


@router.get(
    "/v1/customers/{external_id}/grants",
    operation_id="listGrants",
    responses={404: {"description": "`customer_not_found`"}},
)
async def list_grants(
    external_id: ExternalId,
    call: ReadCall,
    state: Annotated[Literal["live", "all"], Query()] = "all",
) -> GrantsOut:
    catalog = await call.catalog()
    grants = await service.grants_of(
        call.session, catalog, call.ctx, external_id, live_only=state == "live"
    )
    return GrantsOut(
        customer=external_id,
        grants=[GrantOut.of(catalog, external_id, g, call.ctx.now) for g in grants],
    )


@router.get(
    "/v1/grants/{grant_id}",
    operation_id="getGrant",
    responses={404: {"description": "`grant_not_found`"}},
)
async def get_grant(grant_id: GrantId, call: ReadCall) -> GrantOut:
    grant = await service.get(call.session, await call.catalog(), call.ctx.tenant_id, grant_id)
    return await _grant_out(call, grant)


@router.post(
    "/v1/grants/{grant_id}/revoke",
    operation_id="revokeGrant",
    responses={404: {"description": "`grant_not_found`"}},
    openapi_extra=json_body_schema(RevokeIn, required=False),
)
async def revoke_grant(grant_id: GrantId, call: AdminCall) -> GrantOut:
    """End a grant now. Revoking it again answers the same."""
    body = await read_optional_json(call.request, RevokeIn)
    grant = await service.revoke(
        call.session, call.ctx, await call.catalog(), grant_id, reason=body.reason if body else None
    )
    return await _grant_out(call, grant)


async def _grant_out(call: ReadCall | AdminCall, grant: Grant) -> GrantOut:
    external_id = await customers.external_id_of(
        call.session, call.ctx.tenant_id, grant.customer_id
    )
    return GrantOut.of(await call.catalog(), external_id, grant, call.ctx.now)
