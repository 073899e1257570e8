"""Upgrade hints: the plans whose allowance would let a refused consume through."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from billfold.catalog.catalog import Catalog
from billfold.catalog.features import Unlimited
from billfold.metering.quotas import buckets as quota
from billfold.metering.quotas.accounts import Position
from billfold.metering.quotas.format import show
from billfold.metering.quotas.lookup import Quota


def upgrades(
    catalog: Catalog,
    quota_def: Quota,
    here: Position,
    drawn: Mapping[str, Decimal],
    amount: Decimal,
) -> list[dict[str, Any]]:
    """The catalog's plans for sale whose allowance would let this request through: a
    plan not for sale (`for_sale: false`, had only through a grant or a claim code) is
    never offered."""
    period_bucket = next(b for b in here.buckets if b.key.startswith("period:"))
    used_in_period = drawn.get(period_bucket.key, Decimal(0)) + drawn.get(
        quota.overage_key(period_bucket), Decimal(0)
    )
    top_ups = sum(
        (
            max((b.amount or Decimal(0)) - drawn.get(b.key, Decimal(0)), Decimal(0))
            for b in here.buckets
            if not b.key.startswith("period:")
        ),
        Decimal(0),
    )
    found = []
    for plan in catalog.plans.values():
        version = catalog.current_version(plan.key)
        if version is None or not plan.for_sale:
            continue
        value = version.features.get(quota_def.feature.key)
        if value is None:
            continue
        if isinstance(value, Unlimited) or Decimal(value) - used_in_period + top_ups >= amount:  # type: ignore[arg-type]
            found.append({"plan": plan.key, "name": version.name, "allowance": show(value)})
    return found
