"""Routes: the check API, a customer's effective entitlements, and plugin access."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic_core import to_json

from billfold.catalog.features import to_json as value_json
from billfold.entitlements import service
from billfold.entitlements.schemas import (
    CheckIn,
    CheckOut,
    EntitlementOut,
    EntitlementsOut,
    PluginOut,
    QuotaUsageOut,
    SourceOut,
)
from billfold.entitlements.service import CheckResult
from billfold.grants.snapshots import SnapshotCache
from billfold.http.bodies import json_body_schema, json_response, read_json
from billfold.http.calls import CheckCall, ReadCall, short_path
from billfold.kit.schemas import Instant, Text
from billfold.metering.deps import Metering
from billfold.metering.quotas.format import show

router = APIRouter(tags=["entitlements"])

ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
JSON = "application/json"


@router.post(
    "/v1/entitlements/check",
    operation_id="checkEntitlement",
    responses={
        404: {"description": "`feature_not_found`"},
        422: {
            "description": "`invalid_input`: for example `properties` on a feature that "
            "is not metered"
        },
    },
    response_model=CheckOut,
    openapi_extra=json_body_schema(CheckIn),
)
@short_path
async def check(request: Request, call: CheckCall) -> Response:
    """`hasEntitlement(userId, key)`. A denial is a normal answer: `allowed: false`.

    For a metered feature, `requested` is the usage to come and `properties` the
    properties its consume will send: past the quota of a feature paid from a wallet,
    the overage is priced as that consume would price it (AI tokens at the `credits` rate
    of the `model` named there), and allowed while the wallet holds the cost."""
    body = await read_json(request, CheckIn)
    result = await service.check(
        call.unit,
        await call.catalog(),
        call.ctx,
        body,
        snapshots=call.cache(SnapshotCache),
        database=call.runtime.database,
    )
    return Response(to_json(check_payload(body.customer, result)), media_type=JSON)


@router.get("/v1/customers/{external_id}/entitlements", operation_id="getEntitlements")
async def customer_entitlements(
    external_id: ExternalId,
    call: ReadCall,
    at: Annotated[Instant | None, Query(description="resolve at this instant")] = None,
) -> EntitlementsOut:
    """`limits(userId)`: every feature's effective value and the grants it came from."""
    view = await service.entitlements(
        call.unit,
        await call.catalog(),
        call.ctx.tenant_id,
        external_id,
        now=call.ctx.now,
        at=at,
        snapshots=call.cache(SnapshotCache),
        enforcing=call.collaborator(Metering).enforcing,
    )
    out = {k: EntitlementOut.of(v) for k, v in view.resolved.entitlements.items()}
    for key, (standing, mode) in view.usage.items():
        out[key].usage = QuotaUsageOut(
            used=show(standing.used),
            remaining=show(standing.remaining),
            limit=show(standing.limit),
            overage=show(standing.overage),
            resets_at=standing.resets_at,
            enforcement=mode.value,
        )
    resolved = view.resolved
    return EntitlementsOut(
        customer=external_id, known=resolved.known, at=resolved.moment, entitlements=out
    )


@router.get(
    "/v1/customers/{external_id}/plugins/{name}",
    operation_id="getPluginAccess",
    response_model=PluginOut,
    responses={404: {"description": "`feature_not_found`: no such pattern feature"}},
)
async def plugin_access(
    external_id: ExternalId,
    name: Annotated[str, Path(min_length=1, max_length=200)],
    call: CheckCall,
    feature: Annotated[Text, Query(max_length=100)] = service.PLUGIN_FEATURE,
) -> Response:
    """`is_plugin_accessible(user, plugin)`, answered from a `pattern` feature."""
    access = await service.plugin(
        call.unit,
        await call.catalog(),
        call.ctx.tenant_id,
        external_id,
        name,
        feature_key=feature,
        moment=call.ctx.now,
        snapshots=call.cache(SnapshotCache),
    )
    return json_response(
        PluginOut(
            customer=external_id,
            plugin=name,
            feature=access.feature,
            allowed=access.pattern is not None,
            matched_pattern=access.pattern,
            source=SourceOut.of(access.source) if access.source else None,
        )
    )


def check_payload(customer: str, result: CheckResult) -> dict[str, Any]:
    """A `CheckOut` as plain data, the check API's hot path: building the model costs
    more than the check. Tests validate these answers against the model."""
    source, remaining = result.source, result.remaining
    return {
        "customer": customer,
        "feature": result.feature,
        "allowed": result.allowed,
        "value": value_json(result.value),
        "remaining": remaining
        if remaining is None or isinstance(remaining, str)
        else value_json(remaining),
        "reason": result.reason,
        "source": None
        if source is None
        else {
            "grant_id": source.grant_id,
            "source": source.source,
            "plan": source.plan,
            "plan_version": source.plan_version,
            "value": value_json(source.value),
            "ends_at": source.ends_at,
        },
    }
