"""Grants in, entitlements out: granting, revoking, resolving and checking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import service as audit
from billfold.catalog.catalog import Catalog, PlanVersion
from billfold.catalog.model import (
    FeatureType,
    FeatureValue,
    LimitValue,
    Unlimited,
    from_json,
    parse_value,
    to_json,
)
from billfold.customers import service as customers
from billfold.customers.service import Customer, CustomerNotFound
from billfold.entitlements import repository, rules
from billfold.entitlements.rules import Contribution, Entitlement, Grant
from billfold.entitlements.snapshot import Snapshot, SnapshotCache
from billfold.kit import changes
from billfold.kit.context import Context
from billfold.kit.db import Record, UnitOfWork
from billfold.kit.errors import FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_id
from billfold.kit.invariants import InvariantViolation, invariant


class FeatureNotFound(NotFound):
    code = "feature_not_found"


class PlanNotFound(NotFound):
    code = "plan_not_found"


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


@dataclass(frozen=True)
class CustomerEntitlements:
    external_id: str
    known: bool
    moment: datetime
    entitlements: dict[str, Entitlement]


class CheckResult(NamedTuple):  # a tuple: built on every check, cheaper than a dataclass
    feature: str
    type: FeatureType
    allowed: bool
    value: FeatureValue
    remaining: LimitValue | str | None  # a metered quota's is an exact decimal string
    reason: str
    source: Contribution | None


# --- reading ---------------------------------------------------------------------------


async def entitlements_of(
    session: AsyncSession | UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    external_id: str,
    moment: datetime,
    *,
    snapshots: SnapshotCache | None = None,
    keys: list[str] | None = None,
) -> CustomerEntitlements:
    """What a customer may do at `moment`. Unknown customers get the default plan, if any.

    Pass `snapshots` only when `moment` is the present: a snapshot leaves out grants that
    have already ended. Given a unit of work, a cached answer opens no session."""
    snapshot = await _snapshot(session, catalog, tenant_id, external_id, moment, snapshots)
    return CustomerEntitlements(
        external_id=external_id,
        known=snapshot.customer_id is not None,
        moment=moment,
        entitlements=rules.resolve(catalog, snapshot.grants, moment, keys),
    )


async def snapshots_of(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    external_ids: Sequence[str],
    moment: datetime,
) -> dict[str, Snapshot]:
    """Many customers' grants that have not ended by `moment`, from the database, in a
    round trip per thousand. Resolve features from each with `Snapshot.entitlement` at
    `moment` or later. Unknown customers get an empty snapshot (the default plan)."""
    found = await repository.customers_with_current_grants(session, tenant_id, external_ids, moment)
    snapshots = {}
    for external_id in external_ids:
        customer_id, rows = found.get(external_id, (None, []))
        snapshots[external_id] = Snapshot(
            customer_id=customer_id,
            catalog_revision=catalog.revision,
            grants=tuple(grant_from_row(catalog, row) for row in rows),
        )
    return snapshots


async def current_snapshots(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    external_ids: Sequence[str],
    moment: datetime,
    snapshots: SnapshotCache | None,
) -> dict[str, Snapshot]:
    """Many customers' snapshots at the present `moment`: from the cache where it holds
    them, and the rest read in one round trip per thousand (and cached). Resolve each
    with `entitlement_in`."""
    found: dict[str, Snapshot] = {}
    stamps = {}
    for external_id in dict.fromkeys(external_ids):
        cached = snapshots.get(tenant_id, external_id, catalog.revision) if snapshots else None
        if cached is not None:
            found[external_id] = cached
        elif snapshots is not None:
            stamps[external_id] = snapshots.stamp(tenant_id, external_id)
    missing = [e for e in dict.fromkeys(external_ids) if e not in found]
    if missing:
        loaded = await snapshots_of(session, catalog, tenant_id, missing, moment)
        for external_id, snapshot in loaded.items():
            if snapshots is not None:
                snapshots.store(tenant_id, external_id, snapshot, stamps[external_id])
        found.update(loaded)
    return found


def entitlement_in(
    snapshot: Snapshot, catalog: Catalog, external_id: str, feature_key: str, moment: datetime
) -> Entitlement:
    """One feature of a customer's snapshot at `moment`; an unknown customer gets the
    default plan's, or `CustomerNotFound` when the catalog has none."""
    return _known_or_default(snapshot, catalog, external_id).entitlement(
        catalog, feature_key, moment
    )


async def _snapshot(
    session: AsyncSession | UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    external_id: str,
    moment: datetime,
    snapshots: SnapshotCache | None,
) -> Snapshot:
    if snapshots is not None:
        cached = snapshots.get(tenant_id, external_id, catalog.revision)
        if cached is not None:
            return _known_or_default(cached, catalog, external_id)
        stamp = snapshots.stamp(tenant_id, external_id)
    if isinstance(session, UnitOfWork):
        session = session.session
    customer_id, rows = await repository.customer_with_current_grants(
        session, tenant_id, external_id, moment
    )
    snapshot = Snapshot(
        customer_id=customer_id,
        catalog_revision=catalog.revision,
        grants=tuple(grant_from_row(catalog, row) for row in rows),
    )
    if snapshots is not None:
        snapshots.store(tenant_id, external_id, snapshot, stamp)
    return _known_or_default(snapshot, catalog, external_id)


def _known_or_default(snapshot: Snapshot, catalog: Catalog, external_id: str) -> Snapshot:
    if snapshot.customer_id is None and catalog.default_version is None:
        raise CustomerNotFound(
            f"no customer {external_id!r}, and the catalog has no default plan for unknown ones"
        )
    return snapshot


async def check(
    session: AsyncSession | UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    external_id: str,
    feature_key: str,
    *,
    requested: int | str | None,
    current: int | None,
    moment: datetime,
    snapshots: SnapshotCache | None = None,
) -> CheckResult:
    """Answer `may this customer do this now?`. A denial is an answer, not an error."""
    feature = catalog.features.get(feature_key)
    if feature is None:
        raise FeatureNotFound(
            f"no feature {feature_key!r} in the catalog",
            errors=[FieldError("not a feature of the catalog", pointer="#/feature")],
        )
    _check_arguments(feature.type, requested, current)
    entitlement = await entitlement_of(
        session, catalog, tenant_id, external_id, feature_key, moment, snapshots
    )
    return decide(entitlement, requested=requested, current=current)


async def entitlement_of(
    session: AsyncSession | UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    external_id: str,
    feature_key: str,
    moment: datetime,
    snapshots: SnapshotCache | None = None,
) -> Entitlement:
    """One feature of one customer, resolved at `moment` (a feature of the catalog)."""
    snapshot = await _snapshot(session, catalog, tenant_id, external_id, moment, snapshots)
    return snapshot.entitlement(catalog, feature_key, moment)


def decide(
    entitlement: Entitlement, *, requested: int | str | None, current: int | None
) -> CheckResult:
    feature = entitlement.feature
    value = entitlement.value
    if feature.type is FeatureType.BOOLEAN:
        allowed = value is True
        reason = "enabled" if allowed else "not_enabled"
        return CheckResult(
            feature.key, feature.type, allowed, value, None, reason, entitlement.source
        )
    if feature.type is FeatureType.LIMIT:
        if not isinstance(value, int | Unlimited) or current is None:
            raise InvariantViolation("a limit check needs a limit and `current`")
        amount = requested if isinstance(requested, int) else 1
        if isinstance(value, Unlimited):
            allowed, reason = True, "unlimited"
        else:
            allowed = current + amount <= value
            reason = "within_limit" if allowed else "limit_reached"
        left = rules.remaining(value, current)
        return CheckResult(
            feature.key, feature.type, allowed, value, left, reason, entitlement.source
        )
    invariant(isinstance(requested, str), "pattern check needs a name")
    assert isinstance(requested, str)  # for the type checker
    match = rules.matching_pattern(entitlement, requested)
    if match is None:
        return CheckResult(
            feature.key, feature.type, False, value, None, "no_matching_pattern", None
        )
    return CheckResult(feature.key, feature.type, True, value, None, "pattern_matched", match[1])


def _check_arguments(
    feature_type: FeatureType, requested: int | str | None, current: int | None
) -> None:
    if feature_type is FeatureType.LIMIT:
        if current is None:
            raise InvalidInput(
                "a limit feature needs `current`: how many the customer holds now",
                errors=[FieldError("required for a limit feature", pointer="#/current")],
            )
        if requested is not None and (not isinstance(requested, int) or requested < 1):
            raise InvalidInput(
                "`requested` is how many more the customer wants: a positive integer",
                errors=[FieldError("expected a positive integer", pointer="#/requested")],
            )
    elif feature_type is FeatureType.PATTERN:
        if not isinstance(requested, str) or not requested:
            raise InvalidInput(
                "a pattern feature needs `requested`: the name to test, e.g. a plugin",
                errors=[FieldError("expected the name to test", pointer="#/requested")],
            )
    elif requested is not None and not isinstance(requested, int):
        raise InvalidInput(
            "a boolean feature takes no `requested` name",
            errors=[FieldError("not used by a boolean feature", pointer="#/requested")],
        )


async def grants_of(
    session: AsyncSession, catalog: Catalog, ctx: Context, external_id: str, *, live_only: bool
) -> list[Grant]:
    customer = await customers.get(session, ctx.tenant_id, external_id)
    rows = await repository.of_customer(
        session, ctx.tenant_id, customer.id, live_at=ctx.now if live_only else None
    )
    return [grant_from_row(catalog, row) for row in rows]


# --- changing --------------------------------------------------------------------------


def plan_version(catalog: Catalog, plan_key: str, *, pointer: str = "#/plan") -> PlanVersion:
    version = catalog.current_version(plan_key)
    if version is None:
        raise PlanNotFound(
            f"no active plan {plan_key!r} in the catalog",
            errors=[FieldError("not an active plan of the catalog", pointer=pointer)],
        )
    return version


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
        await audit.record(
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
    feature = catalog.features.get(feature_key)
    if feature is None:
        raise FeatureNotFound(
            f"no feature {feature_key!r} in the catalog",
            errors=[FieldError("not a feature of the catalog", pointer="#/feature")],
        )
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
    await audit.record(
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
        await audit.record(
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


def grant_from_row(catalog: Catalog, row: Record) -> Grant:
    value: FeatureValue | None = None
    if row.feature_key is not None and row.value is not None:
        feature = catalog.features.get(row.feature_key)
        if feature is not None:  # an archived feature's grants no longer count
            value = from_json(feature.type, row.value)
    return Grant(
        id=row.id,
        customer_id=row.customer_id,
        source=row.source,
        plan_version_id=row.plan_version_id,
        feature_key=row.feature_key,
        value=value,
        priority=row.priority,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        revoked_at=row.revoked_at,
        subscription_id=row.subscription_id,
        metadata=dict(row.metadata),
        created_at=row.created_at,
    )
