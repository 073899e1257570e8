"""Reported usage drawn from quotas: events that happened already are never refused;
what no bucket covers is overage, recorded in the event log."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.meters import Aggregation, Meter
from billfold.catalog.quotas import Enforcement
from billfold.grants import lookup as grants
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.periods import NEVER
from billfold.metering import repository
from billfold.metering.aggregation import Row, matches
from billfold.metering.events import metered_number
from billfold.metering.quotas import buckets as quota
from billfold.metering.quotas.accounts import anchor_of, decode_state, encode_state, remember_ends
from billfold.metering.quotas.buckets import Bucket
from billfold.metering.quotas.format import as_read, overage_entry, show
from billfold.metering.quotas.lookup import Quota, quotas_fed_by

log = logging.getLogger("billfold.quotas")


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
            value = _drawable(quota_def.meter, event)
            if value is None:
                continue
            quotas[quota_def.feature.key] = quota_def
            draws.setdefault((event["customer"], quota_def.feature.key), []).append(
                (event["occurred_at"], value)
            )
    if not draws:
        return {}
    overages: dict[str, Decimal] = {}
    # Every customer's grants in one go, read at the batch's earliest event, so that late
    # events still see the grants they met; read before the accounts are locked, because
    # every other batch of these customers waits for those locks until we commit.
    earliest = min(when for items in draws.values() for when, _value in items)
    customers = sorted({customer for customer, _feature in draws})
    snapshots = await grants.snapshots_of(session, catalog, ctx.tenant_id, customers, earliest)
    states = await repository.lock_accounts(session, ctx.tenant_id, list(draws), ctx.now)
    updated: dict[tuple[str, str], dict[str, Any]] = {}
    entries: list[eventlog.Entry] = []
    for (customer, feature_key), items in sorted(draws.items()):
        quota_def = quotas[feature_key]
        items.sort(key=lambda item: item[0])
        snapshot = snapshots[customer]
        anchor = await anchor_of(session, ctx.tenant_id, customer, quota_def.policy)
        drawn, ends = decode_state(states[(customer, feature_key)])
        total_overage = Decimal(0)
        # Events are drawn in time order. Between a grant edge and a period edge the live
        # buckets stay the same, and drawing a then b from the same buckets is drawing a + b:
        # so each such span is one draw of its events' sum.
        live: list[Bucket] = []
        span_from = span_until = NEVER
        pending = Decimal(0)
        for occurred_at, value in items:
            if not span_from <= occurred_at < span_until:
                if pending:
                    drawn, overage = quota.draw(live, drawn, pending)
                    total_overage += overage
                since, until, entitlement = snapshot.span(catalog, feature_key, occurred_at)
                live = quota.buckets(entitlement, quota_def.policy, occurred_at, anchor)
                remember_ends(ends, live)
                period_bucket = next(b for b in live if b.key.startswith("period:"))
                span_from = max(since, period_bucket.starts_at)
                span_until = min(until, period_bucket.ends_at)
                pending = Decimal(0)
            pending += value
        drawn, overage = quota.draw(live, drawn, pending)
        total_overage += overage
        drawn, ends = quota.prune(drawn, ends, ctx.now - late_window)
        updated[(customer, feature_key)] = encode_state(drawn, ends)
        if total_overage > 0:
            overages[feature_key] = overages.get(feature_key, Decimal(0)) + total_overage
            entries.append(
                overage_entry(
                    ctx,
                    customer,
                    feature_key,
                    Enforcement.ADVISORY,
                    total_overage,
                    quota.standing(live, drawn),
                )
            )
    await repository.save_accounts(session, ctx.tenant_id, updated, ctx.now)
    if entries:
        # One line for the batch; the event log has an entry per customer and feature.
        log.warning(
            "quota exceeded by reported usage: tenant %s, %d customer quotas, overage %s",
            ctx.tenant_id,
            len(entries),
            ", ".join(f"{feature} {show(amount)}" for feature, amount in sorted(overages.items())),
        )
        await eventlog.record_many(session, entries)
    return overages


def _drawable(meter: Meter, event: Mapping[str, Any]) -> Decimal | None:
    """What one stored event draws from a quota its meter feeds: 1 for a count, the
    property's value for a sum; None when the meter's filters leave it out or there is
    nothing to draw (a correction below zero is not a refund)."""
    properties = event["properties"]
    if meter.filters:
        read = {name: as_read(properties.get(name)) for name in meter.filters}
        if not matches(meter, Row(event["occurred_at"], read)):
            return None
    if meter.aggregation is Aggregation.COUNT:
        return Decimal(1)
    raw = metered_number(properties.get(meter.property or ""))  # "12.5" is a number
    return raw if raw is not None and raw > 0 else None
