"""All SQL for tenants and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.tables import catalogs
from billfold.kit.db import Record
from billfold.tenants.tables import api_keys, tenants


async def insert_tenant(
    session: AsyncSession, *, id: str, slug: str, name: str, now: datetime
) -> None:
    await session.execute(insert(tenants).values(id=id, slug=slug, name=name, created_at=now))


async def by_slug(session: AsyncSession, slug: str) -> Record | None:
    return (await session.execute(select(tenants).where(tenants.c.slug == slug))).one_or_none()


async def by_id(session: AsyncSession, tenant_id: str) -> Record | None:
    statement = select(tenants).where(tenants.c.id == tenant_id)
    return (await session.execute(statement)).one_or_none()


async def all_tenants(session: AsyncSession) -> list[Record]:
    return list((await session.execute(select(tenants).order_by(tenants.c.created_at))).all())


async def insert_key(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(api_keys).values(**values))


async def key_with_tenant(session: AsyncSession, key_id: str) -> Record | None:
    """The key and its tenant's catalog revision, which the request path needs, in one
    round trip."""
    statement = (
        select(
            api_keys.c.id,
            api_keys.c.tenant_id,
            api_keys.c.scope,
            api_keys.c.secret_hash,
            api_keys.c.revoked_at,
            func.coalesce(catalogs.c.revision, 0).label("catalog_revision"),
        )
        .outerjoin(catalogs, catalogs.c.tenant_id == api_keys.c.tenant_id)
        .where(api_keys.c.id == key_id)
    )
    return (await session.execute(statement)).one_or_none()


async def key_in_tenant(session: AsyncSession, tenant_id: str, key_id: str) -> Record | None:
    statement = select(api_keys).where(api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id)
    return (await session.execute(statement)).one_or_none()


async def keys_of(session: AsyncSession, tenant_id: str) -> list[Record]:
    statement = (
        select(api_keys).where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.created_at)
    )
    return list((await session.execute(statement)).all())


async def revoke_key(session: AsyncSession, tenant_id: str, key_id: str, now: datetime) -> bool:
    result = await session.execute(
        update(api_keys)
        .where(
            api_keys.c.id == key_id,
            api_keys.c.tenant_id == tenant_id,
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
