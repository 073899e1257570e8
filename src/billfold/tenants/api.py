"""Routes: API keys of the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import Field

from billfold.http.bodies import json_body_schema, read_json
from billfold.http.calls import AdminCall, ReadCall
from billfold.kit.ids import ID_PATTERN
from billfold.kit.schemas import Body, Out, Storable
from billfold.tenants import service
from billfold.tenants.scopes import Scope
from billfold.tenants.service import ApiKey

router = APIRouter(tags=["api keys"])


class KeyIn(Body):
    name: Annotated[str, Field(min_length=1, max_length=200), Storable]
    scope: Annotated[Scope, Field(strict=False)]  # JSON sends the scope's name


class KeyOut(Out):
    id: str
    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            name=key.name,
            scope=key.scope,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class NewKeyOut(KeyOut):
    token: str = Field(description="shown once; store it now")


class KeysOut(Out):
    keys: list[KeyOut]


@router.post(
    "/v1/keys",
    operation_id="createKey",
    status_code=201,
    openapi_extra=json_body_schema(KeyIn),
)
async def create_key(call: AdminCall) -> NewKeyOut:
    body = await read_json(call.request, KeyIn)
    key, token = await service.create_key(call.session, call.ctx, name=body.name, scope=body.scope)
    return NewKeyOut(token=token, **KeyOut.of(key).model_dump())


@router.get("/v1/keys", operation_id="listKeys")
async def list_keys(call: ReadCall) -> KeysOut:
    return KeysOut(
        keys=[KeyOut.of(k) for k in await service.list_keys(call.session, call.ctx.tenant_id)]
    )


@router.post(
    "/v1/keys/{key_id}/revoke",
    operation_id="revokeKey",
    responses={404: {"description": "`api_key_not_found`"}},
)
async def revoke_key(
    key_id: Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)], call: AdminCall
) -> KeyOut:
    return KeyOut.of(await service.revoke_key(call.session, call.ctx, key_id))
