"""How live grants become a customer's effective entitlements. Pure functions, no I/O.

The rules (also in docs/entitlements.md):

- Only grants live at the moment asked about count: `starts_at <= t < ends_at`, and not
  revoked at or before `t`.
- If the catalog has a default plan, every customer holds it as a baseline, so the free
  tier applies to unknown customers and to customers whose other grants have ended.
- boolean: true if any live grant says true (OR).
- limit: the largest value of any live grant; `unlimited` beats every number.
- pattern: the union of every live grant's glob patterns.
- metered: the allowance per reset period is the largest value of any live plan grant;
  feature grants are top-ups, drawn on by `billfold.metering.quotas.buckets`.
- A feature no live grant mentions has its zero value: false, 0 or no patterns.
- The `source` of a value is the grant that decides it: for booleans and patterns the
  first grant that allows, for limits the grant holding the largest value. Ties go to the
  higher priority, then to the grant that started first, then to the lower id.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from billfold.catalog.catalog import Catalog, PlanVersion
from billfold.catalog.features import (
    UNLIMITED,
    Feature,
    FeatureType,
    FeatureValue,
    LimitValue,
    Unlimited,
)

DEFAULT_SOURCE = "default"
_BEFORE_EVERYTHING = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Grant:
    id: str
    customer_id: str
    source: str
    plan_version_id: str | None
    feature_key: str | None
    value: FeatureValue | None
    priority: int
    starts_at: datetime
    ends_at: datetime | None
    revoked_at: datetime | None
    subscription_id: str | None
    metadata: dict[str, Any]
    created_at: datetime

    def live_at(self, moment: datetime) -> bool:
        if self.starts_at > moment:
            return False
        if self.ends_at is not None and self.ends_at <= moment:
            return False
        return self.revoked_at is None or self.revoked_at > moment

    @property
    def effective_end(self) -> datetime | None:
        if self.revoked_at is None:
            return self.ends_at
        if self.ends_at is None:
            return self.revoked_at
        return min(self.ends_at, self.revoked_at)


@dataclass(frozen=True)
class Contribution:
    """One grant's value for one feature."""

    grant_id: str | None  # None for the default plan's baseline
    source: str
    plan: str | None
    plan_version: int | None
    value: FeatureValue
    priority: int
    starts_at: datetime | None
    ends_at: datetime | None

    def sort_key(self) -> tuple[int, datetime, str]:
        return (-self.priority, self.starts_at or _BEFORE_EVERYTHING, self.grant_id or "")


@dataclass(frozen=True)
class Entitlement:
    feature: Feature
    value: FeatureValue
    contributions: tuple[Contribution, ...] = field(default=())
    source: Contribution | None = None


def contributions(
    catalog: Catalog, grants: Iterable[Grant], moment: datetime, keys: Iterable[str] | None = None
) -> dict[str, list[Contribution]]:
    """Every live grant's value for every feature it mentions (or only for `keys`)."""
    wanted = catalog.features if keys is None else [k for k in keys if k in catalog.features]
    by_feature: dict[str, list[Contribution]] = {key: [] for key in wanted}
    default = catalog.default_version
    if default is not None:
        _add_plan(by_feature, default, None, DEFAULT_SOURCE, 0, None, None)
    for grant in grants:
        if not grant.live_at(moment):
            continue
        if grant.plan_version_id is not None:
            version = catalog.versions.get(grant.plan_version_id)
            if version is not None:
                _add_plan(
                    by_feature,
                    version,
                    grant.id,
                    grant.source,
                    grant.priority,
                    grant.starts_at,
                    grant.effective_end,
                )
        elif grant.feature_key in by_feature and grant.value is not None:
            by_feature[grant.feature_key].append(
                Contribution(
                    grant_id=grant.id,
                    source=grant.source,
                    plan=None,
                    plan_version=None,
                    value=grant.value,
                    priority=grant.priority,
                    starts_at=grant.starts_at,
                    ends_at=grant.effective_end,
                )
            )
    return by_feature


def _add_plan(
    by_feature: dict[str, list[Contribution]],
    version: PlanVersion,
    grant_id: str | None,
    source: str,
    priority: int,
    starts_at: datetime | None,
    ends_at: datetime | None,
) -> None:
    for key, value in version.features.items():
        if key in by_feature:
            by_feature[key].append(
                Contribution(
                    grant_id=grant_id,
                    source=source,
                    plan=version.plan_key,
                    plan_version=version.version,
                    value=value,
                    priority=priority,
                    starts_at=starts_at,
                    ends_at=ends_at,
                )
            )


def resolve(
    catalog: Catalog, grants: Iterable[Grant], moment: datetime, keys: Iterable[str] | None = None
) -> dict[str, Entitlement]:
    by_feature = contributions(catalog, grants, moment, keys)
    return {
        key: _combine(catalog.features[key], sorted(items, key=Contribution.sort_key))
        for key, items in by_feature.items()
    }


def _combine(feature: Feature, items: list[Contribution]) -> Entitlement:
    if feature.type is FeatureType.BOOLEAN:
        source = next((item for item in items if item.value is True), None)
        return Entitlement(feature, source is not None, tuple(items), source)
    if feature.type.counts:
        best: Contribution | None = None
        for item in items:
            if feature.type is FeatureType.METERED and item.plan is None:
                continue  # a feature grant is a top-up bucket, not the allowance
            if best is None or limit_above(item.value, best.value):  # type: ignore[arg-type]
                best = item
        value = best.value if best is not None else 0
        return Entitlement(feature, value, tuple(items), best)
    patterns: set[str] = set()
    for item in items:
        patterns.update(item.value)  # type: ignore[arg-type]
    return Entitlement(feature, tuple(sorted(patterns)), tuple(items), None)


def limit_above(candidate: LimitValue, incumbent: LimitValue) -> bool:
    if isinstance(incumbent, Unlimited):
        return False
    if isinstance(candidate, Unlimited):
        return True
    return candidate > incumbent


def matching_pattern(entitlement: Entitlement, name: str) -> tuple[str, Contribution] | None:
    """The first pattern (by grant order) that lets `name` through, and its grant."""
    for item in entitlement.contributions:
        for pattern in item.value:  # type: ignore[union-attr]
            if fnmatch.fnmatchcase(name, pattern):
                return pattern, item
    return None


def remaining(limit: LimitValue, current: int) -> LimitValue:
    if isinstance(limit, Unlimited):
        return UNLIMITED
    return max(limit - current, 0)
