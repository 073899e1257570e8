"""What a customer holds: their grants, from the snapshot cache or the database, resolved
into entitlements at a moment. The rules themselves are `billfold.grants.resolution`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.features import FeatureValue, from_json
from billfold.customers.service import CustomerNotFound
from billfold.grants import repository, resolution
from billfold.grants.resolution import Entitlement, Grant
from billfold.grants.snapshots import Snapshot, SnapshotCache
from billfold.kit.db import Record, UnitOfWork


@dataclass(frozen=True)
class CustomerEntitlements:
    external_id: str
    known: bool
    moment: datetime
    entitlements: dict[str, Entitlement]


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
        entitlements=resolution.resolve(catalog, snapshot.grants, moment, keys),
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
