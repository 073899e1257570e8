"""Granting and revoking: a plan or a single feature for a customer, over a window, each
change written with its event-log entries and announced to the caches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog, PlanVersion
from billfold.catalog.features import FeatureValue, parse_value, to_json
from billfold.customers import service as customers
from billfold.customers.service import Customer
from billfold.grants import repository
from billfold.grants.lookup import grant_from_row
from billfold.grants.resolution import Grant
from billfold.grants.schemas import GrantIn
from billfold.kit import changes, eventlog
from billfold.kit.context import Context
from billfold.kit.errors import FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_id
from billfold.kit.invariants import invariant


class GrantNotFound(NotFound):
    code = "grant_not_found"


@dataclass(frozen=True)
class Window:
    starts_at: datetime
    ends_at: datetime | None

    def __post_init__(self) -> None:
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise InvalidInput(
                "a grant must end after it starts",
                errors=[FieldError("must be later than starts_at", pointer="#/ends_at")],
            )


async def create(
    session: AsyncSession, ctx: Context, catalog: Catalog, external_id: str, body: GrantIn
) -> Grant:
    """Grant what `body` asks for: a whole plan, or one feature and its value, from now or
    `starts_at`, until `ends_at`, for `duration_days`, or until revoked."""
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
    starts_at = body.starts_at or ctx.now
    ends_at = body.ends_at
    if body.duration_days is not None:
        ends_at = starts_at + timedelta(days=body.duration_days)
    window = Window(starts_at, ends_at)
    if body.plan is not None:
        if body.value is not None:
            raise InvalidInput(
                "a plan grant takes no value",
                errors=[FieldError("only for feature grants", pointer="#/value")],
            )
        version = catalog.require_plan(body.plan)
        customer = await customers.ensure(session, ctx, external_id)
        return await grant_plan(
            session,
            ctx,
            customer,
            version,
            window,
            source=body.source,
            priority=body.priority,
            metadata=body.metadata,
        )
    assert body.feature is not None  # for the type checker: checked above
    if body.value is None:
        raise InvalidInput(
            "a feature grant needs a value",
            errors=[FieldError("required with feature", pointer="#/value")],
        )
    customer = await customers.ensure(session, ctx, external_id)
    return await grant_feature(
        session,
        ctx,
        catalog,
        customer,
        body.feature,
        body.value,
        window,
        source=body.source,
        priority=body.priority,
        metadata=body.metadata,
    )


async def get(session: AsyncSession, catalog: Catalog, tenant_id: str, grant_id: str) -> Grant:
    row = await repository.by_id(session, tenant_id, grant_id)
    if row is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    return grant_from_row(catalog, row)


async def grants_of(
    session: AsyncSession, catalog: Catalog, ctx: Context, external_id: str, *, live_only: bool
) -> list[Grant]:
    customer = await customers.get(session, ctx.tenant_id, external_id)
    rows = await repository.of_customer(
        session, ctx.tenant_id, customer.id, live_at=ctx.now if live_only else None
    )
    return [grant_from_row(catalog, row) for row in rows]


async def grant_plan(
    session: AsyncSession,
    ctx: Context,
    customer: Customer,
    version: PlanVersion,
    window: Window,
    *,
    source: str,
    priority: int = 0,
    metadata: dict[str, Any] | None = None,
    subscription_id: str | None = None,
) -> Grant:
    grant = Grant(
        id=new_id("grt"),
        customer_id=customer.id,
        source=source,
        plan_version_id=version.id,
        feature_key=None,
        value=None,
        priority=priority,
        starts_at=window.starts_at,
        ends_at=window.ends_at,
        revoked_at=None,
        subscription_id=subscription_id,
        metadata=dict(metadata or {}),
        created_at=ctx.now,
    )
    await _store(session, ctx, grant, customer.external_id)
    for key, value in version.features.items():
        await eventlog.record(
            session,
            ctx,
            "EntitlementGranted",
            _granted(grant, key, value, plan=f"{version.plan_key}@v{version.version}"),
            customer_id=customer.id,
        )
    return grant


async def grant_feature(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    customer: Customer,
    feature_key: str,
    raw_value: Any,
    window: Window,
    *,
    source: str,
    priority: int = 0,
    metadata: dict[str, Any] | None = None,
) -> Grant:
    feature = catalog.require_feature(feature_key)
    value = parse_value(feature.type, raw_value)
    if isinstance(value, str):
        raise InvalidInput(
            f"not a value for {feature.type} feature {feature_key!r}",
            errors=[FieldError(value, pointer="#/value")],
        )
    grant = Grant(
        id=new_id("grt"),
        customer_id=customer.id,
        source=source,
        plan_version_id=None,
        feature_key=feature_key,
        value=value,
        priority=priority,
        starts_at=window.starts_at,
        ends_at=window.ends_at,
        revoked_at=None,
        subscription_id=None,
        metadata=dict(metadata or {}),
        created_at=ctx.now,
    )
    await _store(session, ctx, grant, customer.external_id)
    await eventlog.record(
        session,
        ctx,
        "EntitlementGranted",
        _granted(grant, feature_key, value, plan=None),
        customer_id=customer.id,
    )
    return grant


async def revoke(
    session: AsyncSession, ctx: Context, catalog: Catalog, grant_id: str, *, reason: str | None
) -> Grant:
    """End a grant now. Revoking an ended or revoked grant changes nothing and says so."""
    if await repository.revoke(session, ctx.tenant_id, grant_id, ctx.now):
        row = await repository.by_id(session, ctx.tenant_id, grant_id)
        invariant(row is not None, "a revoked grant exists")
        assert row is not None  # for the type checker
        grant = grant_from_row(catalog, row)
        await _record_revoked(session, ctx, catalog, grant, reason)
        return grant
    row = await repository.by_id(session, ctx.tenant_id, grant_id)
    if row is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    return grant_from_row(catalog, row)


async def _record_revoked(
    session: AsyncSession, ctx: Context, catalog: Catalog, grant: Grant, reason: str | None
) -> None:
    external_id = await customers.external_id_of(session, ctx.tenant_id, grant.customer_id)
    await changes.publish(session, customers.change_topic(ctx.tenant_id, external_id))
    keys: list[str]
    if grant.plan_version_id is not None:
        version = catalog.versions.get(grant.plan_version_id)
        keys = list(version.features) if version is not None else []
    else:
        keys = [grant.feature_key] if grant.feature_key else []
    for key in keys:
        await eventlog.record(
            session,
            ctx,
            "EntitlementRevoked",
            {"grant_id": grant.id, "key": key, "source": grant.source, "reason": reason},
            customer_id=grant.customer_id,
        )


async def revoke_subscription_grants(
    session: AsyncSession, ctx: Context, catalog: Catalog, subscription_id: str, *, reason: str
) -> None:
    for row in await repository.of_subscription(session, ctx.tenant_id, subscription_id):
        if await repository.revoke(session, ctx.tenant_id, row.id, ctx.now):
            grant = grant_from_row(catalog, row)
            await _record_revoked(session, ctx, catalog, grant, reason)


async def _store(session: AsyncSession, ctx: Context, grant: Grant, external_id: str) -> None:
    await changes.publish(session, customers.change_topic(ctx.tenant_id, external_id))
    await repository.insert_grant(
        session,
        id=grant.id,
        tenant_id=ctx.tenant_id,
        customer_id=grant.customer_id,
        source=grant.source,
        plan_version_id=grant.plan_version_id,
        feature_key=grant.feature_key,
        value=None if grant.value is None else to_json(grant.value),
        priority=grant.priority,
        starts_at=grant.starts_at,
        ends_at=grant.ends_at,
        revoked_at=None,
        subscription_id=grant.subscription_id,
        metadata=grant.metadata,
        created_at=grant.created_at,
    )


def _granted(grant: Grant, key: str, value: FeatureValue, *, plan: str | None) -> dict[str, Any]:
    return {
        "grant_id": grant.id,
        "key": key,
        "value": to_json(value),
        "source": grant.source,
        "plan": plan,
        "starts_at": grant.starts_at.isoformat(),
        "ends_at": grant.ends_at.isoformat() if grant.ends_at else None,
    }
