"""Metered features: where a customer stands, atomic check-and-consume, and drawing
reported usage from quota buckets. Takes a session and a context; never commits.

A draw either locks the customer's quota account row first, or (consume on PostgreSQL)
writes the row only if its version is the one it drew from (decision 0018). Either way,
concurrent draws on one quota take effect one after the other, and the final usage is
exact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import service as audit
from billfold.catalog.catalog import Catalog
from billfold.catalog.model import Feature, FeatureType, Unlimited
from billfold.customers.service import CustomerNotFound
from billfold.entitlements import service as entitlements
from billfold.entitlements.rules import Entitlement
from billfold.entitlements.service import FeatureNotFound
from billfold.entitlements.snapshot import Snapshot, SnapshotCache
from billfold.kit.context import Context
from billfold.kit.errors import BillfoldError, FieldError, InvalidInput
from billfold.kit.ids import new_sorted_ids
from billfold.kit.invariants import invariant
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
    status = 422  # as for a reused Idempotency-Key header: one code, one status
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
    policy = _policy(tuple(sorted(feature.config.items())))
    return Quota(feature, policy, catalog.meters[policy.meter])


@lru_cache(maxsize=1024)
def _policy(config: tuple[tuple[str, Any], ...]) -> QuotaPolicy:
    """A feature's quota policy, parsed once per distinct setting (a consume asks each time)."""
    return QuotaPolicy.from_json(dict(config))


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
    entitlement = await entitlements.entitlement_of(
        session, catalog, tenant_id, customer, quota_def.feature.key, moment, snapshots
    )
    if state is None:
        state = await repository.read_account(session, tenant_id, customer, quota_def.feature.key)
    drawn, _ends = _drawn(state)
    return await _position_of(session, tenant_id, customer, quota_def, entitlement, moment, drawn)


async def _position_of(
    session: AsyncSession,
    tenant_id: str,
    customer: str,
    quota_def: Quota,
    entitlement: Entitlement,
    moment: datetime,
    drawn: Mapping[str, Decimal],
) -> Position:
    anchor = await _anchor(session, tenant_id, customer, quota_def.policy)
    live = quota.buckets(entitlement, quota_def.policy, moment, anchor)
    return Position(quota_def, entitlement, live, drawn)


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


@dataclass(frozen=True)
class ConsumeRequest:
    """One consume, checked and ready to be drawn."""

    ctx: Context
    catalog: Catalog
    quota: Quota
    customer: str
    amount: Decimal
    idempotency_key: str
    properties: dict[str, Any]  # the usage event's, the amount included
    enforcement: Enforcement


def prepare_consume(
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
) -> ConsumeRequest:
    """Check a consume against the catalog before anything is locked: the feature is
    metered, the amount is one its meter can record exactly, and the meter counts it."""
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
    mode = effective_enforcement(quota_def.policy, default_enforcement, platform)
    return ConsumeRequest(
        ctx, catalog, quota_def, customer, amount, idempotency_key, event_properties, mode
    )


class KeyRaced(Exception):
    """An idempotency key this batch meant to store was stored already: by another
    transaction in the same instant, or before, when the batch did not look its keys up.
    The batch must roll back and run again, looking them up: it will then see it."""


async def consume_batch(
    session: AsyncSession,
    requests: Sequence[ConsumeRequest],
    *,
    late_window: timedelta = timedelta(days=7),
    snapshots: SnapshotCache | None = None,
    look_up_keys: bool = True,
) -> list[Consumed | BillfoldError]:
    """Check and record one tenant's consumes, in order, in the caller's transaction: an
    answer per request, a refusal being a `QuotaExceeded` (under `enforce`, for what a
    hard quota does not cover; nothing is recorded for it) or an `IdempotencyKeyReused`.

    The accounts are locked once for the whole batch and the events stored in one
    statement, so a batch costs a few round trips however many consumes it holds."""
    if not requests:
        return []
    tenant_id = requests[0].ctx.tenant_id
    keys = [(r.customer, r.quota.feature.key) for r in requests]
    states = await repository.lock_accounts(session, tenant_id, keys, requests[-1].ctx.now)
    batch = await _draw_batch(
        session, requests, keys, states, late_window, snapshots, look_up_keys=look_up_keys
    )
    if batch.rows:
        stored = await repository.record_consumes(
            session, batch.rows, batch.states, requests[-1].ctx.now
        )
        if stored != len(batch.rows):
            raise KeyRaced(f"{len(batch.rows)} keys, some stored already")
    for entry in batch.entries:
        data = entry.data
        log.warning(
            "quota exceeded: tenant %s customer %s feature %s overage %s (%s)",
            tenant_id,
            data["customer"],
            data["feature"],
            data["overage"],
            data["enforcement"],
        )
    await audit.record_many(session, batch.entries)
    return batch.answers


async def consume_unlocked(
    session: AsyncSession,
    requests: Sequence[ConsumeRequest],
    *,
    late_window: timedelta = timedelta(days=7),
    snapshots: SnapshotCache | None = None,
) -> tuple[list[Consumed | BillfoldError | None], set[tuple[str, str]]]:
    """`consume_batch` without locks, on PostgreSQL, for a session in autocommit: two
    statements, a read and a write, instead of a transaction's five (decision 0018).

    The accounts are read as they stand, and each is written only if no other writer
    moved it meanwhile. Returns an answer per request, None for those to draw again under
    lock, and the (customer, feature) accounts that need the lock: those another writer
    moved, and those whose draw writes the event log (its chain is written in a
    transaction). A consume answered from an earlier one's key (a replay, or a key used
    for another customer) is drawn again with it. Raises `KeyRaced` when a key is stored
    already; then nothing was written."""
    if not requests:
        return [], set()
    tenant_id = requests[0].ctx.tenant_id
    keys = [(r.customer, r.quota.feature.key) for r in requests]
    read = await repository.read_accounts(session, tenant_id, keys)
    states = {key: state for key, (state, _version) in read.items()}
    batch = await _draw_batch(session, requests, keys, states, late_window, snapshots)
    locked = set(batch.audited)
    unlocked = {key: state for key, state in batch.states.items() if key not in locked}
    if unlocked:
        versions = {key: read[key][1] if key in read else 0 for key in unlocked}
        try:
            written = await repository.record_unless_changed(
                session, batch.rows, batch.features, unlocked, versions, requests[-1].ctx.now
            )
        except IntegrityError as error:
            if getattr(error.orig, "sqlstate", None) == "23505":  # unique violation: a key
                raise KeyRaced(f"{len(batch.rows)} keys, some stored already") from error
            raise
        locked |= unlocked.keys() - written
    again = {r.idempotency_key for r, key in zip(requests, keys, strict=True) if key in locked}
    answers = [
        None if key in locked or request.idempotency_key in again else answer
        for request, key, answer in zip(requests, keys, batch.answers, strict=True)
    ]
    return answers, locked


@dataclass
class _Batch:
    """A batch of consumes drawn, and what storing it writes."""

    answers: list[Consumed | BillfoldError]
    rows: list[dict[str, Any]]  # the new usage events
    features: list[str]  # each new event's feature
    states: dict[tuple[str, str], dict[str, Any]]  # the drawn accounts' new state
    entries: list[audit.Entry]  # QuotaExceeded, for the event log
    audited: set[tuple[str, str]]  # the accounts those entries are about


async def _draw_batch(
    session: AsyncSession,
    requests: Sequence[ConsumeRequest],
    keys: Sequence[tuple[str, str]],
    states: Mapping[tuple[str, str], Mapping[str, Any]],
    late_window: timedelta,
    snapshots: SnapshotCache | None,
    *,
    look_up_keys: bool = False,
) -> _Batch:
    """Draw one tenant's consumes, in order, from their accounts' `states` (an account
    missing there has drawn nothing yet)."""
    tenant_id = requests[0].ctx.tenant_id
    invariant(all(r.ctx.tenant_id == tenant_id for r in requests), "one tenant per batch")
    last = requests[-1].ctx.now
    accounts = {key: _drawn(states.get(key, {})) for key in set(keys)}
    # Without `look_up_keys`, every key is taken to be new: the common case saves a round
    # trip, and a key found stored after all raises `KeyRaced`, to run again with it.
    known: dict[str, tuple[str, str, str]] = {}
    if look_up_keys:
        for stored_key, event_id, customer, event_type in await repository.events_by_keys(
            session, tenant_id, [r.idempotency_key for r in requests]
        ):
            known[stored_key] = (event_id, customer, event_type)
    # Every customer's grants at once: from the cache, the rest in one round trip.
    catalog = requests[0].catalog
    held = await entitlements.current_snapshots(
        session, catalog, tenant_id, [r.customer for r in requests], last, snapshots
    )
    batch = _Batch([], [], [], {}, [], set())
    ids = iter(new_sorted_ids("use", len(requests), last))  # one random read per batch
    changed: set[tuple[str, str]] = set()
    for request, key in zip(requests, keys, strict=True):
        drawn, ends = accounts[key]
        try:
            here = await _position(session, request, drawn, held, snapshots)
        except BillfoldError as error:  # for example an unknown customer, no default plan
            batch.answers.append(error)
            continue
        answer, totals = _draw_one(request, here, drawn, known, next(ids))
        batch.answers.append(answer)
        if totals is None or not isinstance(answer, Consumed):
            continue  # refused, or replayed: nothing drawn
        batch.rows.append(_usage_row(request, answer.event_id))
        batch.features.append(key[1])
        known[request.idempotency_key] = (answer.event_id, request.customer, _type_of(request))
        _remember_ends(ends, here.buckets)
        accounts[key] = quota.prune(totals, ends, request.ctx.now - late_window)
        changed.add(key)
        if answer.overage > 0 and request.enforcement is not Enforcement.OFF:
            batch.audited.add(key)
            batch.entries.append(
                _overage_entry(
                    request.ctx,
                    request.customer,
                    answer.feature,
                    request.enforcement,
                    answer.overage,
                    answer.standing,
                )
            )
    batch.states = {key: _state(*accounts[key]) for key in sorted(changed)}
    if not look_up_keys:
        refused = [
            request.idempotency_key
            for request, answer in zip(requests, batch.answers, strict=True)
            if isinstance(answer, QuotaExceeded)
        ]
        # A refusal stores nothing, so no insert would reveal a retry of a consume that
        # was stored before the quota ran out; it must be answered `replayed`.
        if refused and await repository.events_by_keys(session, tenant_id, refused):
            raise KeyRaced(f"{len(refused)} refused keys, some stored already")
    return batch


async def _position(
    session: AsyncSession,
    request: ConsumeRequest,
    drawn: Mapping[str, Decimal],
    held: Mapping[str, Snapshot],
    snapshots: SnapshotCache | None,
) -> Position:
    ctx, quota_def, catalog = request.ctx, request.quota, request.catalog
    feature_key = quota_def.feature.key
    snapshot = held.get(request.customer)
    if snapshot is not None and snapshot.catalog_revision == catalog.revision:
        entitlement = entitlements.entitlement_in(
            snapshot, catalog, request.customer, feature_key, ctx.now
        )
    else:  # a request that saw another catalog revision than the batch's first
        entitlement = await entitlements.entitlement_of(
            session, catalog, ctx.tenant_id, request.customer, feature_key, ctx.now, snapshots
        )
    return await _position_of(
        session, ctx.tenant_id, request.customer, quota_def, entitlement, ctx.now, drawn
    )


def _type_of(request: ConsumeRequest) -> str:
    return request.quota.meter.event_type


def _draw_one(
    request: ConsumeRequest,
    here: Position,
    drawn: Mapping[str, Decimal],
    known: Mapping[str, tuple[str, str, str]],
    event_id: str,
) -> tuple[Consumed | BillfoldError, dict[str, Decimal] | None]:
    """One consume's answer, given where its quota stands and the keys already used, and
    the account's totals after it (None when nothing is drawn). A new event gets
    `event_id`."""
    feature_key = request.quota.feature.key
    mode = request.enforcement
    earlier = known.get(request.idempotency_key)
    if earlier is not None:
        stored_id, customer, event_type = earlier
        if customer != request.customer or event_type != _type_of(request):
            reused = f"usage event {request.idempotency_key!r} is for {customer!r}, {event_type!r}"
            return IdempotencyKeyReused(reused), None
        replayed = Consumed(
            request.customer,
            feature_key,
            request.amount,
            mode,
            here.standing,
            Decimal(0),
            stored_id,
            True,
        )
        return replayed, None
    totals, overage = quota.draw(here.buckets, drawn, request.amount)
    policy = request.quota.policy
    if (
        overage > 0
        and mode is Enforcement.ENFORCE
        and policy.limit is LimitKind.HARD
        and not policy.overage
    ):
        standing = here.standing
        refusal = QuotaExceeded(
            f"{feature_key}: {request.amount} requested, {show(standing.remaining)} left"
            + (f" until {_instant(standing.resets_at)}" if standing.resets_at else ""),
            extra={
                "feature": feature_key,
                "requested": show(request.amount),
                "remaining": show(standing.remaining),
                "used": show(standing.used),
                "limit": show(standing.limit),
                "resets_at": _instant(standing.resets_at),
                "upgrade": upgrades(request.catalog, request.quota, here, drawn, request.amount),
            },
        )
        return refusal, None
    after = quota.standing(here.buckets, totals)
    consumed = Consumed(
        request.customer, feature_key, request.amount, mode, after, overage, event_id, False
    )
    return consumed, totals


def _usage_row(request: ConsumeRequest, event_id: str) -> dict[str, Any]:
    ctx = request.ctx
    return {
        "id": event_id,
        "tenant_id": ctx.tenant_id,
        "idempotency_key": request.idempotency_key,
        "customer": request.customer,
        "type": _type_of(request),
        "service": None,
        "correlation_id": ctx.correlation_id,
        "occurred_at": ctx.now,
        "received_at": ctx.now,
        "properties": request.properties,
    }


def _overage_entry(
    ctx: Context,
    customer: str,
    feature_key: str,
    mode: Enforcement,
    overage: Decimal,
    after: Standing,
) -> audit.Entry:
    """A `QuotaExceeded` entry for the event log."""
    data = {
        "customer": customer,
        "feature": feature_key,
        "overage": show(overage),
        "used": show(after.used),
        "limit": show(after.limit),
        "enforcement": mode.value,
    }
    return audit.Entry(ctx, "QuotaExceeded", data)


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
    snapshots = await entitlements.snapshots_of(
        session, catalog, ctx.tenant_id, customers, earliest
    )
    states = await repository.lock_accounts(session, ctx.tenant_id, list(draws), ctx.now)
    updated: dict[tuple[str, str], dict[str, Any]] = {}
    entries: list[audit.Entry] = []
    for (customer, feature_key), items in sorted(draws.items()):
        quota_def = quotas[feature_key]
        items.sort(key=lambda item: item[0])
        snapshot = snapshots[customer]
        anchor = await _anchor(session, ctx.tenant_id, customer, quota_def.policy)
        drawn, ends = _drawn(states[(customer, feature_key)])
        total_overage = Decimal(0)
        # Events are drawn in time order. Between a grant edge and a period edge the live
        # buckets stay the same, and drawing a then b from the same buckets is drawing a + b:
        # so each such span is one draw of its events' sum.
        live: list[Bucket] = []
        span_from = span_until = quota.NEVER
        pending = Decimal(0)
        for occurred_at, value in items:
            if not span_from <= occurred_at < span_until:
                if pending:
                    drawn, overage = quota.draw(live, drawn, pending)
                    total_overage += overage
                since, until, entitlement = snapshot.span(catalog, feature_key, occurred_at)
                live = quota.buckets(entitlement, quota_def.policy, occurred_at, anchor)
                _remember_ends(ends, live)
                period_bucket = next(b for b in live if b.key.startswith("period:"))
                span_from = max(since, period_bucket.starts_at)
                span_until = min(until, period_bucket.ends_at)
                pending = Decimal(0)
            pending += value
        drawn, overage = quota.draw(live, drawn, pending)
        total_overage += overage
        drawn, ends = quota.prune(drawn, ends, ctx.now - late_window)
        updated[(customer, feature_key)] = _state(drawn, ends)
        if total_overage > 0:
            overages[feature_key] = overages.get(feature_key, Decimal(0)) + total_overage
            entries.append(
                _overage_entry(
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
        await audit.record_many(session, entries)
    return overages


def _drawable(meter: Meter, event: Mapping[str, Any]) -> Decimal | None:
    """What one stored event draws from a quota its meter feeds: 1 for a count, the
    property's value for a sum; None when the meter's filters leave it out or there is
    nothing to draw (a correction below zero is not a refund)."""
    properties = event["properties"]
    if meter.filters:
        read = {name: _as_read(properties.get(name)) for name in meter.filters}
        if not matches(meter, Row(event["occurred_at"], read)):
            return None
    if meter.aggregation is Aggregation.COUNT:
        return Decimal(1)
    raw = _as_read(properties.get(meter.property or ""))
    return raw if isinstance(raw, Decimal) and raw > 0 else None


def _remember_ends(ends: dict[str, datetime], live: list[Bucket]) -> None:
    for bucket in live:
        ends[bucket.key] = bucket.ends_at
        if bucket.key.startswith("period:"):
            ends[quota.overage_key(bucket)] = bucket.ends_at
