"""A metered feature as the catalog defines it: its quota policy and its meter, looked up
once per distinct setting, and the enforcement that applies to it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from billfold.catalog.catalog import Catalog
from billfold.catalog.features import Feature, FeatureType
from billfold.catalog.meters import Meter
from billfold.catalog.quotas import Enforcement, QuotaPolicy


@dataclass(frozen=True)
class Quota:
    """A metered feature as the catalog defines it: its policy and its meter."""

    feature: Feature
    policy: QuotaPolicy
    meter: Meter


def quota_of(catalog: Catalog, feature_key: str, *, pointer: str = "#/feature") -> Quota:
    feature = catalog.require_feature(feature_key, kind=FeatureType.METERED, pointer=pointer)
    policy = _policy(tuple(sorted((k, _hashable(v)) for k, v in feature.config.items())))
    return Quota(feature, policy, catalog.meters[policy.meter])


def _hashable(value: Any) -> Any:
    """A setting as a cache key: a nested block (`wallet`) as its sorted items."""
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


@lru_cache(maxsize=1024)
def _policy(config: tuple[tuple[str, Any], ...]) -> QuotaPolicy:
    """A feature's quota policy, parsed once per distinct setting (a consume asks each time).
    A block (`wallet`) comes as its items: no other setting is a tuple."""
    return QuotaPolicy.from_json({k: dict(v) if isinstance(v, tuple) else v for k, v in config})


def quotas_fed_by(catalog: Catalog, event_type: str) -> list[Quota]:
    found = []
    for feature in catalog.features.values():
        if feature.type is FeatureType.METERED:
            policy = QuotaPolicy.from_json(feature.config)
            meter = catalog.meters.get(policy.meter)
            if meter is not None and meter.event_type == event_type:
                found.append(Quota(feature, policy, meter))
    return found


@dataclass(frozen=True)
class Enforcing:
    """The deployment's quota enforcement: the default for features that set none, and
    whether this is the platform, which always enforces whatever a feature says."""

    default: Enforcement
    platform: bool = False

    def of(self, policy: QuotaPolicy) -> Enforcement:
        return Enforcement.ENFORCE if self.platform else policy.enforcement_under(self.default)
