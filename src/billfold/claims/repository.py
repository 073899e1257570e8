"""All SQL for claim batches, codes and redemptions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.tables import plans
from billfold.claims.tables import claim_batches, claim_codes, claim_redemptions
from billfold.kit.db import Record


async def insert_batch(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(claim_batches).values(**values))


async def insert_codes(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await session.execute(insert(claim_codes), rows)


async def code_by_hash(session: AsyncSession, tenant_id: str, code_hash: str) -> Record | None:
    statement = (
        select(
            claim_codes.c.id,
            claim_codes.c.redemption_count,
            claim_codes.c.revoked_at,
            claim_batches.c.id.label("batch_id"),
            claim_batches.c.source,
            claim_batches.c.duration_days,
            claim_batches.c.max_redemptions,
            claim_batches.c.expires_at,
            claim_batches.c.metadata,
            claim_batches.c.feature_key,
            claim_batches.c.feature_value,
            claim_batches.c.wallet_unit,
            claim_batches.c.wallet_amount,
            claim_batches.c.wallet_expires_in_days,
            claim_batches.c.wallet_priority,
            plans.c.key.label("plan_key"),
        )
        .join(claim_batches, claim_batches.c.id == claim_codes.c.batch_id)
        .outerjoin(plans, plans.c.id == claim_batches.c.plan_id)
        .where(claim_codes.c.tenant_id == tenant_id, claim_codes.c.code_hash == code_hash)
    )
    return (await session.execute(statement)).one_or_none()


async def redemption_of(session: AsyncSession, code_id: str, customer_id: str) -> Record | None:
    statement = select(claim_redemptions).where(
        claim_redemptions.c.code_id == code_id, claim_redemptions.c.customer_id == customer_id
    )
    return (await session.execute(statement)).one_or_none()


async def take_redemption(session: AsyncSession, code_id: str, max_redemptions: int) -> bool:
    """Count one redemption if the code has one left: the row lock makes this race-free."""
    result = await session.execute(
        update(claim_codes)
        .where(
            claim_codes.c.id == code_id,
            claim_codes.c.revoked_at.is_(None),
            claim_codes.c.redemption_count < max_redemptions,
        )
        .values(redemption_count=claim_codes.c.redemption_count + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def insert_redemption(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(claim_redemptions).values(**values))


async def revoke_code(session: AsyncSession, tenant_id: str, code_id: str, now: datetime) -> int:
    result = await session.execute(
        update(claim_codes)
        .where(
            claim_codes.c.tenant_id == tenant_id,
            claim_codes.c.id == code_id,
            claim_codes.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def revoke_batch(session: AsyncSession, tenant_id: str, batch_id: str, now: datetime) -> int:
    result = await session.execute(
        update(claim_codes)
        .where(
            claim_codes.c.tenant_id == tenant_id,
            claim_codes.c.batch_id == batch_id,
            claim_codes.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def batch_by_id(session: AsyncSession, tenant_id: str, batch_id: str) -> Record | None:
    statement = (
        select(claim_batches, plans.c.key.label("plan_key"))
        .outerjoin(plans, plans.c.id == claim_batches.c.plan_id)
        .where(claim_batches.c.tenant_id == tenant_id, claim_batches.c.id == batch_id)
    )
    return (await session.execute(statement)).one_or_none()
