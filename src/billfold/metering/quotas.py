"""Metered features: where a customer stands, atomic check-and-consume, and drawing
reported usage from quota buckets. Takes a session and a context; never commits.

Every draw locks the customer's quota account row first, so concurrent consumes of one
quota run one after the other and the final usage is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import service as audit
from billfold.catalog.catalog import Catalog
from billfold.catalog.model import Feature, FeatureType, Unlimited
from billfold.customers.service import CustomerNotFound
from billfold.entitlements import service as entitlements
from billfold.entitlements.rules import Entitlement
from billfold.entitlements.service import FeatureNotFound
from billfold.entitlements.snapshot import SnapshotCache
from billfold.kit.context import Context
from billfold.kit.errors import BillfoldError, FieldError, InvalidInput
from billfold.kit.ids import new_id
from billfold.metering import quota, repository
from billfold.metering.events import json_number
from billfold.metering.model import Aggregation, Meter, Row, exact, matches
from billfold.metering.quota import Bucket, Enforcement, LimitKind, QuotaPolicy, Standing
from billfold.subscriptions import service as subscriptions

log = logging.getLogger("billfold.quotas")


class QuotaExceeded(BillfoldError):
    status = 402
    code = "quota_exceeded"
    title = "The quota does not cover this"


class IdempotencyKeyReused(BillfoldError):
    status = 409
    code = "idempotency_key_reused"
    title = "This idempotency key belongs to another usage event"


@dataclass(frozen=True)
class Quota:
    """A metered feature as the catalog defines it: its policy and its meter."""

    feature: Feature
    policy: QuotaPolicy
    meter: Meter


def quota_of(catalog: Catalog, feature_key: str, *, pointer: str = "#/feature") -> Quota:
    feature = catalog.features.get(feature_key)
    if feature is None or feature.type is not FeatureType.METERED:
        raise FeatureNotFound(
            f"no metered feature {feature_key!r} in the catalog",
            errors=[FieldError("expected a metered feature", pointer=pointer)],
        )
    policy = QuotaPolicy.from_json(feature.config)
    return Quota(feature, policy, catalog.meters[policy.meter])


def quotas_fed_by(catalog: Catalog, event_type: str) -> list[Quota]:
    found = []
    for feature in catalog.features.values():
        if feature.type is FeatureType.METERED:
            policy = QuotaPolicy.from_json(feature.config)
            meter = catalog.meters.get(policy.meter)
            if meter is not None and meter.event_type == event_type:
                found.append(Quota(feature, policy, meter))
    return found


async def _anchor(
    session: AsyncSession, tenant_id: str, customer: str, policy: QuotaPolicy
) -> datetime | None:
    if policy.anchor is not quota.Anchor.SUBSCRIPTION:
        return None
    try:
        held = await subscriptions.of_customer(session, tenant_id, customer)
    except CustomerNotFound:
        return None
    active = [s for s in held if s.status == "active"]
    return active[0].started_at if active else None


def _drawn(state: Mapping[str, Any]) -> tuple[dict[str, Decimal], dict[str, datetime]]:
    drawn = {key: Decimal(value) for key, value in state.get("drawn", {}).items()}
    ends = {key: datetime.fromisoformat(value) for key, value in state.get("ends", {}).items()}
    return drawn, ends


def _state(drawn: Mapping[str, Decimal], ends: Mapping[str, datetime]) -> dict[str, Any]:
    return {
        "drawn": {key: exact(value) for key, value in sorted(drawn.items())},
        "ends": {key: value.isoformat() for key, value in sorted(ends.items())},
    }


@dataclass(frozen=True)
class Position:
    """A customer's quota at one moment: the buckets, and where they stand."""

    quota: Quota
    entitlement: Entitlement
    buckets: list[Bucket]
    standing: Standing


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
    entitlement = await entitlements.entitlement_of(
        session, catalog, tenant_id, customer, quota_def.feature.key, moment, snapshots
    )
    anchor = await _anchor(session, tenant_id, customer, quota_def.policy)
    live = quota.buckets(entitlement, quota_def.policy, moment, anchor)
    if state is None:
        state = await repository.read_account(session, tenant_id, customer, quota_def.feature.key)
    drawn, _ends = _drawn(state)
    return Position(quota_def, entitlement, live, quota.standing(live, drawn))


@dataclass(frozen=True)
class Consumed:
    customer: str
    feature: str
    amount: Decimal
    enforcement: Enforcement
    standing: Standing
    overage: Decimal  # the part of this amount that no bucket covered
    event_id: str
    replayed: bool


def effective_enforcement(policy: QuotaPolicy, default: Enforcement, platform: bool) -> Enforcement:
    """The platform always enforces; elsewhere the feature's own setting wins."""
    return Enforcement.ENFORCE if platform else policy.enforcement_under(default)


async def consume(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    customer: str,
    feature_key: str,
    amount: Decimal,
    idempotency_key: str,
    *,
    default_enforcement: Enforcement,
    platform: bool = False,
    properties: Mapping[str, Any] | None = None,
    late_window: timedelta = timedelta(days=7),
    snapshots: SnapshotCache | None = None,
) -> Consumed:
    """Check and record usage in one step. Under `enforce`, what a hard quota does not
    cover is refused with `quota_exceeded` and nothing is recorded."""
    quota_def = quota_of(catalog, feature_key)
    meter = quota_def.meter
    if meter.aggregation is Aggregation.COUNT and amount != 1:
        raise InvalidInput(
            f"{feature_key} counts events: each consume uses 1",
            errors=[FieldError("must be 1 for a counted quota", pointer="#/amount")],
        )
    event_properties: dict[str, Any] = dict(properties or {})
    if meter.property is not None:
        number = json_number(amount)
        if number is None:
            raise InvalidInput(
                "amount: more digits than Billfold stores exactly",
                errors=[FieldError("fewer significant digits", pointer="#/amount")],
            )
        event_properties[meter.property] = number
    if not matches(meter, Row(ctx.now, {k: _as_read(v) for k, v in event_properties.items()})):
        raise InvalidInput(
            f"meter {meter.key!r} would not count this usage: its filters need "
            + ", ".join(f"{k} in {list(v)}" for k, v in meter.filters.items()),
            errors=[FieldError("add the properties the meter filters on", pointer="#/properties")],
        )
    key = (customer, feature_key)
    states = await repository.lock_accounts(session, ctx.tenant_id, [key], ctx.now)
    known = await repository.event_by_key(session, ctx.tenant_id, idempotency_key)
    here = await position(
        session,
        catalog,
        ctx.tenant_id,
        customer,
        quota_def,
        ctx.now,
        state=states[key],
        snapshots=snapshots,
    )
    mode = effective_enforcement(quota_def.policy, default_enforcement, platform)
    if known is not None:
        if known.customer != customer or known.type != meter.event_type:
            raise IdempotencyKeyReused(
                f"usage event {idempotency_key!r} is for {known.customer!r}, {known.type!r}"
            )
        return Consumed(
            customer, feature_key, amount, mode, here.standing, Decimal(0), known.id, True
        )
    drawn, ends = _drawn(states[key])
    totals, overage = quota.draw(here.buckets, drawn, amount)
    if overage > 0 and mode is not Enforcement.OFF:
        refuse = (
            mode is Enforcement.ENFORCE
            and quota_def.policy.limit is LimitKind.HARD
            and not quota_def.policy.overage
        )
        if refuse:
            raise QuotaExceeded(
                f"{feature_key}: {amount} requested, {show(here.standing.remaining)} left"
                + (
                    f" until {here.standing.resets_at.isoformat()}"
                    if here.standing.resets_at
                    else ""
                ),
                extra={
                    "feature": feature_key,
                    "requested": show(amount),
                    "remaining": show(here.standing.remaining),
                    "used": show(here.standing.used),
                    "limit": show(here.standing.limit),
                    "resets_at": _instant(here.standing.resets_at),
                    "upgrade": upgrades(catalog, quota_def, here, drawn, amount),
                },
            )
    event_id = new_id("use")
    inserted = await repository.insert_new(
        session,
        [
            {
                "id": event_id,
                "tenant_id": ctx.tenant_id,
                "idempotency_key": idempotency_key,
                "customer": customer,
                "type": meter.event_type,
                "service": None,
                "correlation_id": ctx.correlation_id,
                "occurred_at": ctx.now,
                "received_at": ctx.now,
                "properties": event_properties,
            }
        ],
    )
    if idempotency_key not in inserted:
        # Another customer's consume took this key in the same instant (one customer's
        # consumes wait for each other on the account lock, so it was not ours).
        raise IdempotencyKeyReused(
            f"usage event {idempotency_key!r} was just stored for another use"
        )
    _remember_ends(ends, here.buckets)
    totals, ends = quota.prune(totals, ends, ctx.now - late_window)
    await repository.save_accounts(session, ctx.tenant_id, {key: _state(totals, ends)}, ctx.now)
    after = quota.standing(here.buckets, totals)
    if overage > 0 and mode is not Enforcement.OFF:
        await _record_overage(session, ctx, customer, feature_key, mode, overage, after)
    return Consumed(customer, feature_key, amount, mode, after, overage, event_id, False)


async def _record_overage(
    session: AsyncSession,
    ctx: Context,
    customer: str,
    feature_key: str,
    mode: Enforcement,
    overage: Decimal,
    after: Standing,
) -> None:
    log.warning(
        "quota exceeded: tenant %s customer %s feature %s overage %s (%s)",
        ctx.tenant_id,
        customer,
        feature_key,
        overage,
        mode,
    )
    await audit.record(
        session,
        ctx,
        "QuotaExceeded",
        {
            "customer": customer,
            "feature": feature_key,
            "overage": show(overage),
            "used": show(after.used),
            "limit": show(after.limit),
            "enforcement": mode.value,
        },
    )


def upgrades(
    catalog: Catalog,
    quota_def: Quota,
    here: Position,
    drawn: Mapping[str, Decimal],
    amount: Decimal,
) -> list[dict[str, Any]]:
    """The catalog's plans whose allowance would let this request through."""
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
        if version is None:
            continue
        value = version.features.get(quota_def.feature.key)
        if value is None:
            continue
        if isinstance(value, Unlimited) or Decimal(value) - used_in_period + top_ups >= amount:  # type: ignore[arg-type]
            found.append({"plan": plan.key, "name": version.name, "allowance": show(value)})
    return found


def _instant(value: datetime | None) -> str | None:
    """An instant as the API writes it everywhere: ISO 8601, UTC, with Z."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def show(value: object) -> Any:
    if value is None or isinstance(value, Unlimited):
        return "unlimited"
    return str(exact(value))


def _as_read(value: Any) -> Any:
    """A property as a meter reads it back from storage (numbers as Decimal)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return Decimal(repr(value))


async def draw_reported(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    events: Sequence[dict[str, Any]],
    *,
    late_window: timedelta,
) -> dict[str, Decimal]:
    """Draw freshly stored usage events from the quotas their meters feed. The usage has
    happened already, so nothing is refused; what no bucket covers is overage, returned
    per feature."""
    by_type: dict[str, list[Quota]] = {}
    draws: dict[tuple[str, str], list[tuple[datetime, Decimal]]] = {}
    quotas: dict[str, Quota] = {}
    for event in events:
        fed = by_type.get(event["type"])
        if fed is None:
            fed = by_type[event["type"]] = quotas_fed_by(catalog, event["type"])
        for quota_def in fed:
            meter = quota_def.meter
            read = {k: _as_read(v) for k, v in event["properties"].items()}
            if not matches(meter, Row(event["occurred_at"], read)):
                continue
            if meter.aggregation is Aggregation.COUNT:
                value = Decimal(1)
            else:
                raw = read.get(meter.property or "")
                if not isinstance(raw, Decimal) or raw <= 0:
                    continue  # nothing to draw (a correction below zero is not a refund)
                value = raw
            quotas[quota_def.feature.key] = quota_def
            draws.setdefault((event["customer"], quota_def.feature.key), []).append(
                (event["occurred_at"], value)
            )
    if not draws:
        return {}
    overages: dict[str, Decimal] = {}
    states = await repository.lock_accounts(session, ctx.tenant_id, list(draws), ctx.now)
    # Every customer's grants in one go, read at the batch's earliest event, so that late
    # events still see the grants they met.
    earliest = min(when for items in draws.values() for when, _value in items)
    customers = sorted({customer for customer, _feature in draws})
    snapshots = await entitlements.snapshots_of(
        session, catalog, ctx.tenant_id, customers, earliest
    )
    updated: dict[tuple[str, str], dict[str, Any]] = {}
    for (customer, feature_key), items in sorted(draws.items()):
        quota_def = quotas[feature_key]
        items.sort(key=lambda item: item[0])
        snapshot = snapshots[customer]
        anchor = await _anchor(session, ctx.tenant_id, customer, quota_def.policy)
        drawn, ends = _drawn(states[(customer, feature_key)])
        total_overage = Decimal(0)
        live: list[Bucket] = []
        for occurred_at, value in items:
            entitlement = snapshot.entitlement(catalog, feature_key, occurred_at)
            live = quota.buckets(entitlement, quota_def.policy, occurred_at, anchor)
            drawn, overage = quota.draw(live, drawn, value)
            total_overage += overage
            _remember_ends(ends, live)
        drawn, ends = quota.prune(drawn, ends, ctx.now - late_window)
        updated[(customer, feature_key)] = _state(drawn, ends)
        if total_overage > 0:
            overages[feature_key] = overages.get(feature_key, Decimal(0)) + total_overage
            await _record_overage(
                session,
                ctx,
                customer,
                feature_key,
                Enforcement.ADVISORY,
                total_overage,
                quota.standing(live, drawn),
            )
    await repository.save_accounts(session, ctx.tenant_id, updated, ctx.now)
    return overages


def _remember_ends(ends: dict[str, datetime], live: list[Bucket]) -> None:
    for bucket in live:
        ends[bucket.key] = bucket.ends_at
        if bucket.key.startswith("period:"):
            ends[quota.overage_key(bucket)] = bucket.ends_at
