"""What a customer may do: the check API's answers, plugin access, and the customer's
entitlements with where they stand on each quota. A denial is an answer, not an error.

Grants and how they resolve are `billfold.grants`; quotas are `billfold.metering`. This
package answers across both, so that a product asks one question and gets one answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from billfold.catalog.catalog import Catalog
from billfold.catalog.features import FeatureType, FeatureValue, LimitValue, Unlimited
from billfold.catalog.quotas import Enforcement
from billfold.customers import service as customers
from billfold.entitlements.schemas import CheckIn
from billfold.grants import lookup, resolution
from billfold.grants.lookup import CustomerEntitlements
from billfold.grants.resolution import Contribution, Entitlement
from billfold.grants.snapshots import SnapshotCache
from billfold.kit.context import Context
from billfold.kit.db import Database, UnitOfWork
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.invariants import InvariantViolation, invariant
from billfold.metering import gauges
from billfold.metering.quotas.accounts import position
from billfold.metering.quotas.buckets import Standing, draw
from billfold.metering.quotas.format import show
from billfold.metering.quotas.lookup import Enforcing, quota_of
from billfold.metering.quotas.wallet import price
from billfold.wallets import service as wallets

PLUGIN_FEATURE = "plugins"


class CheckResult(NamedTuple):  # a tuple: built on every check, cheaper than a dataclass
    feature: str
    type: FeatureType
    allowed: bool
    value: FeatureValue
    remaining: LimitValue | str | None  # a metered quota's is an exact decimal string
    reason: str
    source: Contribution | None


async def check(
    unit: UnitOfWork,
    catalog: Catalog,
    ctx: Context,
    body: CheckIn,
    *,
    snapshots: SnapshotCache | None,
    database: Database | None = None,
) -> CheckResult:
    """`hasEntitlement(userId, key)`: may the customer do this now? A metered feature is
    answered from its quota (nothing is recorded: consume does that), a limit fed by a
    gauge meter from the meter's kept value (`database` stores a customer's first one; without
    it the meter is aggregated). Given a unit of work, a cached answer opens no session."""
    customers.check_external_id(body.customer, pointer="#/customer")
    tenant_id, moment = ctx.tenant_id, ctx.now
    feature = catalog.require_feature(body.feature)
    if feature.type is FeatureType.METERED:
        return await _check_quota(unit, catalog, ctx, body, snapshots)
    if body.properties:
        raise InvalidInput(
            "only a metered feature takes `properties`: the usage to price",
            errors=[FieldError("not used by this feature", pointer="#/properties")],
        )
    current = body.current
    gauge = feature.config.get("meter")
    if current is None and gauge:
        current = await _gauge(unit, database, catalog, tenant_id, body.customer, gauge)
    _check_arguments(feature.type, body.requested, current)
    entitlement = await lookup.entitlement_of(
        unit, catalog, tenant_id, body.customer, feature.key, moment, snapshots
    )
    return decide(entitlement, requested=body.requested, current=current)


async def _gauge(
    unit: UnitOfWork,
    database: Database | None,
    catalog: Catalog,
    tenant_id: str,
    customer: str,
    meter: str,
) -> int:
    """A limit's current count from its meter (for example spaces created minus spaces
    deleted), so the product keeps no counter of its own: one row, kept current as events
    are stored (`metering.gauges`)."""
    value = await gauges.current(unit, database, catalog, tenant_id, customer, meter)
    return max(math.ceil(value), 0)


async def _check_quota(
    unit: UnitOfWork,
    catalog: Catalog,
    ctx: Context,
    body: CheckIn,
    snapshots: SnapshotCache | None,
) -> CheckResult:
    """May the customer use `requested` (default 1) more of a metered feature now? Past
    the quota of a feature paid from a wallet: when the wallet holds the cost of what the
    quota does not cover (`wallet_pays`), not when it does not (`insufficient_balance`),
    that overage drawn and priced exactly as consume draws and prices it (the `model` of
    `properties` included). The check records and draws nothing."""
    if body.current is not None or isinstance(body.requested, str):
        raise InvalidInput(
            "a metered feature takes `requested`: the amount to use; Billfold counts the rest",
            errors=[FieldError("not used by a metered feature", pointer="#/current")],
        )
    quota = quota_of(catalog, body.feature)
    here = await position(
        unit.session, catalog, ctx.tenant_id, body.customer, quota, ctx.now, snapshots=snapshots
    )
    amount = Decimal(body.requested or 1)
    remaining = here.standing.remaining
    allowed = remaining is None or remaining >= amount
    reason = "within_quota" if allowed else "quota_exhausted"
    wallet = quota.policy.wallet
    if not allowed and remaining is not None and wallet is not None:
        _totals, overage = draw(here.buckets, here.drawn, amount)  # as consume draws it
        quoted = price(catalog, quota, body.properties, overage)
        held = await wallets.balance(unit.session, ctx, body.customer, quoted.unit)
        allowed = held.available >= quoted.cost
        reason = "wallet_pays" if allowed else "insufficient_balance"
    return CheckResult(
        body.feature,
        FeatureType.METERED,
        allowed,
        here.entitlement.value,
        show(remaining),
        reason,
        here.entitlement.source,
    )


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
        left = resolution.remaining(value, current)
        return CheckResult(
            feature.key, feature.type, allowed, value, left, reason, entitlement.source
        )
    invariant(isinstance(requested, str), "pattern check needs a name")
    assert isinstance(requested, str)  # for the type checker
    match = resolution.matching_pattern(entitlement, requested)
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


class PluginAccess(NamedTuple):
    feature: str
    pattern: str | None  # the pattern that lets the plugin through, if one does
    source: Contribution | None


async def plugin(
    unit: UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    external_id: str,
    name: str,
    *,
    feature_key: str,
    moment: datetime,
    snapshots: SnapshotCache | None,
) -> PluginAccess:
    """`is_plugin_accessible(user, plugin)`, answered from a `pattern` feature."""
    customers.check_external_id(external_id)
    catalog.require_feature(
        feature_key, kind=FeatureType.PATTERN, pointer=None, parameter="feature"
    )
    resolved = await lookup.entitlements_of(
        unit, catalog, tenant_id, external_id, moment, snapshots=snapshots, keys=[feature_key]
    )
    match = resolution.matching_pattern(resolved.entitlements[feature_key], name)
    if match is None:
        return PluginAccess(feature_key, None, None)
    return PluginAccess(feature_key, match[0], match[1])


@dataclass(frozen=True)
class CustomerView:
    """`limits(userId)`: every feature resolved, and, resolved for now, where the customer
    stands on each metered one under the enforcement that applies to it."""

    resolved: CustomerEntitlements
    usage: dict[str, tuple[Standing, Enforcement]]


async def entitlements(
    unit: UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    external_id: str,
    *,
    now: datetime,
    at: datetime | None,
    snapshots: SnapshotCache | None,
    enforcing: Enforcing,
) -> CustomerView:
    """Every feature's effective value at `at` (default: now) and the grants it came from.
    Quota usage is known for the present only."""
    customers.check_external_id(external_id)
    resolved = await lookup.entitlements_of(
        unit,
        catalog,
        tenant_id,
        external_id,
        at or now,
        snapshots=snapshots if at is None else None,
    )
    standings: dict[str, tuple[Standing, Enforcement]] = {}
    if at is None:
        for key, entitlement in resolved.entitlements.items():
            if entitlement.feature.type is FeatureType.METERED:
                quota = quota_of(catalog, key)
                here = await position(unit.session, catalog, tenant_id, external_id, quota, now)
                standings[key] = (here.standing, enforcing.of(quota.policy))
    return CustomerView(resolved, standings)
