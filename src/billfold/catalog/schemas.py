"""Response models of the catalog routes; `MeterOut` is also the usage report's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from billfold.catalog.catalog import Catalog
from billfold.catalog.features import to_json
from billfold.kit.schemas import Out


class MeterOut(Out):
    key: str
    event: str
    aggregation: str
    property: str | None
    filters: dict[str, list[str | int | bool]]
    group_by: list[str]
    description: str | None
    subtract: str | None = None  # events of this type count negatively (a gauge)
    allow_negative: bool = False  # a sum meter that takes negative values


class WalletOverageOut(Out):
    """A metered feature's overage, paid from the customer's wallet (docs/quotas.md)."""

    unit: str
    rate: str = Field(description="minor units of `unit` per unit of usage, a decimal string")
    rounding: str


class FeatureOut(Out):
    key: str
    type: str
    description: str | None
    wallet: WalletOverageOut | None = None  # metered features whose overage a wallet pays


class PriceOut(Out):
    """One price of a plan version, as the plans file writes it (amounts are decimal
    strings in major units; docs/pricing.md)."""

    currency: str
    interval: str
    interval_count: int
    recurring: dict[str, Any] | None = None
    usage: dict[str, dict[str, Any]] = Field(default_factory=dict)
    minimum: str | None = None
    trial_days: int = 0


class PlanOut(Out):
    key: str
    name: str
    version: int
    default: bool
    for_sale: bool = Field(description="offered to customers (upgrade hints); false: only granted")
    features: dict[str, bool | int | str | list[str]]
    prices: list[PriceOut] = Field(default_factory=list)
    created_at: datetime | None = None


class CatalogOut(Out):
    revision: int
    meters: list[MeterOut]
    features: list[FeatureOut]
    plans: list[PlanOut]


class ApplyOut(Out):
    applied: bool
    revision: int
    changes: list[str]


def catalog_out(catalog: Catalog) -> CatalogOut:
    plans = []
    for plan in catalog.plans.values():
        version = catalog.current_version(plan.key)
        if version is None:
            continue
        plans.append(
            PlanOut(
                key=plan.key,
                name=version.name,
                version=version.version,
                default=plan.is_default,
                for_sale=plan.for_sale,
                features={k: to_json(v) for k, v in version.features.items()},
                prices=[PriceOut(**price.as_json()) for price in version.prices],
            )
        )
    return CatalogOut(
        revision=catalog.revision,
        meters=[MeterOut(key=m.key, **m.as_json()) for m in catalog.meters.values()],
        features=[
            FeatureOut(
                key=f.key,
                type=f.type.value,
                description=f.description,
                wallet=WalletOverageOut(**f.config["wallet"]) if f.config.get("wallet") else None,
            )
            for f in catalog.features.values()
        ],
        plans=plans,
    )
