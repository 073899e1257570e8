"""All SQL for the catalog: its revision, features, meters, plans and plan versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.tables import (
    catalog_settings,
    catalogs,
    features,
    meters,
    plan_versions,
    plans,
)
from billfold.kit.db import Record
from billfold.kit.sql import dialect_insert


async def revision(session: AsyncSession, tenant_id: str) -> int:
    """The tenant's catalog revision: 0 before its first apply."""
    statement = select(catalogs.c.revision).where(catalogs.c.tenant_id == tenant_id)
    return int((await session.execute(statement)).scalar_one_or_none() or 0)


async def lock_revision(session: AsyncSession, tenant_id: str, now: datetime) -> int:
    """Lock the tenant's catalog for a change, creating its row on the first apply, and
    return its current revision. Concurrent first applies meet on the primary key."""
    await session.execute(
        dialect_insert(session, catalogs)
        .values(tenant_id=tenant_id, revision=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["tenant_id"])
    )
    statement = select(catalogs.c.revision).where(catalogs.c.tenant_id == tenant_id)
    return int((await session.execute(statement.with_for_update())).scalar_one())


async def bump_revision(session: AsyncSession, tenant_id: str, now: datetime) -> int:
    result = await session.execute(
        update(catalogs)
        .where(catalogs.c.tenant_id == tenant_id)
        .values(revision=catalogs.c.revision + 1, updated_at=now)
        .returning(catalogs.c.revision)
    )
    return int(result.scalar_one())


async def all_features(session: AsyncSession, tenant_id: str) -> list[Record]:
    statement = select(features).where(features.c.tenant_id == tenant_id).order_by(features.c.key)
    return list((await session.execute(statement)).all())


async def all_plans(session: AsyncSession, tenant_id: str) -> list[Record]:
    statement = select(plans).where(plans.c.tenant_id == tenant_id).order_by(plans.c.key)
    return list((await session.execute(statement)).all())


async def all_versions(session: AsyncSession, tenant_id: str) -> list[Record]:
    statement = (
        select(plan_versions, plans.c.key.label("plan_key"))
        .join(plans, plans.c.id == plan_versions.c.plan_id)
        .where(plan_versions.c.tenant_id == tenant_id)
        .order_by(plans.c.key, plan_versions.c.version)
    )
    return list((await session.execute(statement)).all())


async def insert_feature(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(features).values(**values))


async def update_feature(
    session: AsyncSession, tenant_id: str, key: str, now: datetime, **values: Any
) -> None:
    await session.execute(
        update(features)
        .where(features.c.tenant_id == tenant_id, features.c.key == key)
        .values(updated_at=now, **values)
    )


async def insert_plan(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(plans).values(**values))


async def update_plan(session: AsyncSession, plan_id: str, **values: Any) -> None:
    await session.execute(update(plans).where(plans.c.id == plan_id).values(**values))


async def insert_version(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(plan_versions).values(**values))


async def all_meters(session: AsyncSession, tenant_id: str) -> list[Record]:
    statement = select(meters).where(meters.c.tenant_id == tenant_id).order_by(meters.c.key)
    return list((await session.execute(statement)).all())


async def insert_meter(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(meters).values(**values))


async def update_meter(
    session: AsyncSession, tenant_id: str, key: str, now: datetime, **values: Any
) -> None:
    await session.execute(
        update(meters)
        .where(meters.c.tenant_id == tenant_id, meters.c.key == key)
        .values(updated_at=now, **values)
    )


async def settings_documents(session: AsyncSession, tenant_id: str) -> dict[str, Any]:
    statement = select(catalog_settings.c.name, catalog_settings.c.document).where(
        catalog_settings.c.tenant_id == tenant_id
    )
    return {row.name: row.document for row in await session.execute(statement)}


async def put_settings_document(
    session: AsyncSession, tenant_id: str, name: str, document: Any, now: datetime
) -> None:
    statement = dialect_insert(session, catalog_settings).values(
        tenant_id=tenant_id, name=name, document=document, updated_at=now
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "name"],
            set_={"document": document, "updated_at": now},
        )
    )
