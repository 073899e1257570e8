"""Quota accounts: what a customer has drawn from each bucket of a metered feature, as
stored, and their position (buckets and draws) at a moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.quotas import Anchor, QuotaPolicy
from billfold.customers.service import CustomerNotFound
from billfold.grants import lookup as grants
from billfold.grants.resolution import Entitlement
from billfold.grants.snapshots import SnapshotCache
from billfold.metering import repository
from billfold.metering.aggregation import exact
from billfold.metering.quotas import buckets as quota
from billfold.metering.quotas.buckets import Bucket, Standing
from billfold.metering.quotas.lookup import Quota
from billfold.subscriptions import service as subscriptions
from billfold.subscriptions.status import SubscriptionStatus


async def anchor_of(
    session: AsyncSession, tenant_id: str, customer: str, policy: QuotaPolicy
) -> datetime | None:
    if policy.anchor is not Anchor.SUBSCRIPTION:
        return None
    try:
        held = await subscriptions.of_customer(session, tenant_id, customer)
    except CustomerNotFound:
        return None
    active = [s for s in held if s.status is SubscriptionStatus.ACTIVE]
    return active[0].started_at if active else None


def decode_state(state: Mapping[str, Any]) -> tuple[dict[str, Decimal], dict[str, datetime]]:
    drawn = {key: Decimal(value) for key, value in state.get("drawn", {}).items()}
    ends = {key: datetime.fromisoformat(value) for key, value in state.get("ends", {}).items()}
    return drawn, ends


def encode_state(drawn: Mapping[str, Decimal], ends: Mapping[str, datetime]) -> dict[str, Any]:
    return {
        "drawn": {key: exact(value) for key, value in sorted(drawn.items())},
        "ends": {key: value.isoformat() for key, value in sorted(ends.items())},
    }


@dataclass(frozen=True)
class Position:
    """A customer's quota at one moment: the buckets, and what was drawn from them."""

    quota: Quota
    entitlement: Entitlement
    buckets: list[Bucket]
    drawn: Mapping[str, Decimal]

    @cached_property
    def standing(self) -> Standing:
        """Where they stand; worked out when asked (a consume that is allowed never asks)."""
        return quota.standing(self.buckets, self.drawn)


async def position(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    customer: str,
    quota_def: Quota,
    moment: datetime,
    *,
    state: Mapping[str, Any] | None = None,
    snapshots: SnapshotCache | None = None,
) -> Position:
    entitlement = await grants.entitlement_of(
        session, catalog, tenant_id, customer, quota_def.feature.key, moment, snapshots
    )
    if state is None:
        state = await repository.read_account(session, tenant_id, customer, quota_def.feature.key)
    drawn, _ends = decode_state(state)
    return await position_of(session, tenant_id, customer, quota_def, entitlement, moment, drawn)


async def position_of(
    session: AsyncSession,
    tenant_id: str,
    customer: str,
    quota_def: Quota,
    entitlement: Entitlement,
    moment: datetime,
    drawn: Mapping[str, Decimal],
) -> Position:
    anchor = await anchor_of(session, tenant_id, customer, quota_def.policy)
    live = quota.buckets(entitlement, quota_def.policy, moment, anchor)
    return Position(quota_def, entitlement, live, drawn)


def remember_ends(ends: dict[str, datetime], live: list[Bucket]) -> None:
    for bucket in live:
        ends[bucket.key] = bucket.ends_at
        if bucket.key.startswith("period:"):
            ends[quota.overage_key(bucket)] = bucket.ends_at
