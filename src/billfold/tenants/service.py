"""Tenants and API keys: creating them, revoking keys, and authenticating a request."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit import changes, eventlog
from billfold.kit.context import Actor, Context
from billfold.kit.db import Record
from billfold.kit.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from billfold.kit.ids import ID_PATTERN, new_id
from billfold.tenants import repository
from billfold.tenants.scopes import Scope

TOKEN_PREFIX = "bfk"  # noqa: S105 (a prefix, not a secret)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class TenantExists(Conflict):
    code = "tenant_exists"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


@dataclass(frozen=True)
class Tenant:
    id: str
    slug: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    key_id: str
    tenant_id: str
    scope: Scope
    catalog_revision: int

    @functools.cached_property
    def actor(self) -> Actor:
        return Actor(kind="api_key", id=self.key_id, scope=self.scope.value)


async def create_tenant(session: AsyncSession, slug: str, name: str, now: datetime) -> Tenant:
    if not _SLUG.match(slug):
        raise InvalidInput(f"tenant slug {slug!r} must be lowercase letters, digits and dashes")
    if await repository.by_slug(session, slug) is not None:
        raise TenantExists(f"tenant {slug!r} exists already")
    tenant = Tenant(id=new_id("ten"), slug=slug, name=name, created_at=now)
    await repository.insert_tenant(session, id=tenant.id, slug=slug, name=name, now=now)
    await eventlog.create_chain(session, tenant.id)
    return tenant


async def tenant_by_slug(session: AsyncSession, slug: str) -> Tenant:
    row = await repository.by_slug(session, slug)
    if row is None:
        raise TenantNotFound(f"no tenant {slug!r}; create it with `billfold tenants create`")
    return Tenant(id=row.id, slug=row.slug, name=row.name, created_at=row.created_at)


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    row = await repository.by_id(session, tenant_id)
    if row is None:
        raise TenantNotFound(f"no tenant {tenant_id!r}")
    return Tenant(id=row.id, slug=row.slug, name=row.name, created_at=row.created_at)


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    return [
        Tenant(id=row.id, slug=row.slug, name=row.name, created_at=row.created_at)
        for row in await repository.all_tenants(session)
    ]


async def create_key(
    session: AsyncSession, ctx: Context, *, name: str, scope: Scope
) -> tuple[ApiKey, str]:
    """Create a key and return it with its token. The token is never stored or shown again."""
    key_id = new_id("key")
    secret = secrets.token_urlsafe(32)
    token = f"{TOKEN_PREFIX}_{key_id.removeprefix('key_')}_{secret}"
    await repository.insert_key(
        session,
        id=key_id,
        tenant_id=ctx.tenant_id,
        name=name,
        scope=scope.value,
        secret_hash=_digest(secret),
        created_at=ctx.now,
    )
    await eventlog.record(session, ctx, "ApiKeyCreated", {"key_id": key_id, "scope": scope.value})
    key = ApiKey(key_id, ctx.tenant_id, name, scope, ctx.now, None)
    return key, token


async def list_keys(session: AsyncSession, tenant_id: str) -> list[ApiKey]:
    return [_key(row) for row in await repository.keys_of(session, tenant_id)]


async def revoke_key(session: AsyncSession, ctx: Context, key_id: str) -> ApiKey:
    """Revoke a key; revoking a revoked key answers the same and records nothing new."""
    if await repository.revoke_key(session, ctx.tenant_id, key_id, ctx.now):
        await changes.publish(session, f"key:{key_id}")
        await eventlog.record(session, ctx, "ApiKeyRevoked", {"key_id": key_id})
    row = await repository.key_in_tenant(session, ctx.tenant_id, key_id)
    if row is None:
        raise ApiKeyNotFound(f"no API key {key_id!r}")
    return _key(row)


async def authenticate(session: AsyncSession, token: str) -> Principal:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise Unauthenticated("the API key is malformed; expected `Authorization: Bearer bfk_...`")
    key_id = f"key_{parts[1]}"
    if not ID_PATTERN.match(key_id):
        raise Unauthenticated("the API key is malformed")
    row = await repository.key_with_tenant(session, key_id)
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(parts[2])):
        raise Unauthenticated("the API key is not valid")
    if row.revoked_at is not None:
        raise Unauthenticated("the API key has been revoked")
    return Principal(row.id, row.tenant_id, Scope(row.scope), int(row.catalog_revision))


def _digest(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _key(row: Record) -> ApiKey:
    return ApiKey(row.id, row.tenant_id, row.name, Scope(row.scope), row.created_at, row.revoked_at)
