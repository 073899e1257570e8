"""Check-and-consume: one tenant's consumes drawn in order from their accounts, either
under row locks (`consume_batch`) or, on PostgreSQL, written only if no other writer
moved the account (`consume_unlocked`, decision 0018). Takes a session; never commits."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.meters import Aggregation
from billfold.catalog.quotas import Enforcement, LimitKind
from billfold.customers.service import check_external_id
from billfold.grants import lookup as grants
from billfold.grants.snapshots import Snapshot, SnapshotCache
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.errors import BillfoldError, FieldError, InvalidInput
from billfold.kit.idempotency import IdempotencyKeyReused
from billfold.kit.ids import new_sorted_ids
from billfold.kit.invariants import invariant
from billfold.metering import repository
from billfold.metering.aggregation import Row, matches
from billfold.metering.events import json_number, sorted_json
from billfold.metering.quotas import buckets as quota
from billfold.metering.quotas.accounts import (
    Position,
    decode_state,
    encode_state,
    position_of,
    remember_ends,
)
from billfold.metering.quotas.buckets import Standing
from billfold.metering.quotas.format import as_read, instant, overage_entry, show
from billfold.metering.quotas.hints import upgrades
from billfold.metering.quotas.lookup import Enforcing, Quota, quota_of
from billfold.metering.quotas.wallet import Payment, lock_wallets, paid_entry, pay
from billfold.wallets.records import InsufficientBalance, SpendExistsWithDifferentFields

log = logging.getLogger("billfold.quotas")


class QuotaExceeded(BillfoldError):
    status = 402
    code = "quota_exceeded"
    title = "The quota does not cover this"


@dataclass(frozen=True)
class Consumed:
    customer: str
    feature: str
    amount: Decimal
    enforcement: Enforcement
    standing: Standing
    overage: Decimal  # the part of this amount that no bucket covered
    event_id: str
    replayed: bool  # a replay answers its first answer's overage and payment
    payment: Payment | None = None  # the overage's cost, drawn from the wallet


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
    digest: str = ""  # what the consume asks (`consume_digest`); stored with its event


def prepare_consume(
    ctx: Context,
    catalog: Catalog,
    customer: str,
    feature_key: str,
    amount: Decimal,
    idempotency_key: str,
    *,
    enforcing: Enforcing,
    properties: Mapping[str, Any] | None = None,
) -> ConsumeRequest:
    """Check a consume against the catalog before anything is locked: the feature is
    metered, the amount is one its meter can record exactly, and the meter counts it."""
    check_external_id(customer, pointer="#/customer")
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
    if not matches(meter, Row(ctx.now, {k: as_read(v) for k, v in event_properties.items()})):
        raise InvalidInput(
            f"meter {meter.key!r} would not count this usage: its filters need "
            + ", ".join(f"{k} in {list(v)}" for k, v in meter.filters.items()),
            errors=[FieldError("add the properties the meter filters on", pointer="#/properties")],
        )
    mode = enforcing.of(quota_def.policy)
    digest = consume_digest(customer, feature_key, amount, properties or {})
    return ConsumeRequest(
        ctx, catalog, quota_def, customer, amount, idempotency_key, event_properties, mode, digest
    )


def consume_digest(
    customer: str, feature_key: str, amount: Decimal, properties: Mapping[str, Any]
) -> str:
    """What a consume asks for, as 16 hex digits (64 bits: it is only compared with the
    digest stored under the same key): a retry with the same idempotency key must ask for
    the same (docs/decisions/0023). The properties are sorted, so their order is free."""
    parts = (
        customer.encode(),
        feature_key.encode(),
        f"{amount.normalize():f}".encode(),
        sorted_json(dict(properties)).encode() if properties else b"{}",
    )
    return hashlib.blake2b(b"\x1f".join(parts), digest_size=8).hexdigest()


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
    hard quota does not cover; nothing is recorded for it), an `InsufficientBalance`
    (under `enforce`, for an overage its wallet cannot pay) or an `IdempotencyKeyReused`.

    The accounts are locked once for the whole batch and the events stored in one
    statement, so a batch costs a few round trips however many consumes it holds. The
    wallets of features paid from one are locked next, and each overage is paid in the
    same transaction as its usage."""
    if not requests:
        return []
    tenant_id = requests[0].ctx.tenant_id
    keys = [(r.customer, r.quota.feature.key) for r in requests]
    states = await repository.lock_accounts(session, tenant_id, keys, requests[-1].ctx.now)
    await lock_wallets(session, requests[-1].ctx, _wallets_of(requests))
    batch = await _draw_batch(
        session,
        requests,
        keys,
        states,
        late_window,
        snapshots,
        look_up_keys=look_up_keys,
        pay_from_wallets=True,
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
    await eventlog.record_many(session, batch.entries)
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
    entries: list[eventlog.Entry]  # QuotaExceeded, UsagePaidFromWallet: the event log
    audited: set[tuple[str, str]]  # accounts that need a transaction: entries, payments


async def _draw_batch(
    session: AsyncSession,
    requests: Sequence[ConsumeRequest],
    keys: Sequence[tuple[str, str]],
    states: Mapping[tuple[str, str], Mapping[str, Any]],
    late_window: timedelta,
    snapshots: SnapshotCache | None,
    *,
    look_up_keys: bool = False,
    pay_from_wallets: bool = False,
) -> _Batch:
    """Draw one tenant's consumes, in order, from their accounts' `states` (an account
    missing there has drawn nothing yet). With `pay_from_wallets` (in a transaction, the
    wallets locked), each overage of a feature paid from a wallet is paid; without it,
    such an account is only marked `audited`, to be drawn again in a transaction."""
    tenant_id = requests[0].ctx.tenant_id
    invariant(all(r.ctx.tenant_id == tenant_id for r in requests), "one tenant per batch")
    last = requests[-1].ctx.now
    accounts = {key: decode_state(states.get(key, {})) for key in set(keys)}
    # Without `look_up_keys`, every key is taken to be new: the common case saves a round
    # trip, and a key found stored after all raises `KeyRaced`, to run again with it.
    known: dict[str, Known] = {}
    if look_up_keys:
        for found in await repository.events_by_keys(
            session, tenant_id, [r.idempotency_key for r in requests]
        ):
            stored_key, event_id, customer, event_type, digest, stored, outcome = found
            overage, payment = _outcome_of(outcome)
            known[stored_key] = Known(
                event_id, customer, event_type, digest or _reported(stored), overage, payment
            )
    # Every customer's grants at once: from the cache, the rest in one round trip.
    catalog = requests[0].catalog
    held = await grants.current_snapshots(
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
        if (
            totals is not None
            and isinstance(answer, Consumed)
            and answer.overage > 0
            and request.quota.policy.wallet is not None
        ):
            batch.audited.add(key)
            if pay_from_wallets:
                answer = await _pay(session, request, answer, batch)
        batch.answers.append(answer)
        if totals is None or not isinstance(answer, Consumed):
            continue  # refused, or replayed: nothing drawn
        batch.rows.append(_usage_row(request, answer))
        batch.features.append(key[1])
        known[request.idempotency_key] = Known(
            answer.event_id,
            request.customer,
            _type_of(request),
            request.digest,
            answer.overage,
            answer.payment,
        )
        remember_ends(ends, here.buckets)
        accounts[key] = quota.prune(totals, ends, request.ctx.now - late_window)
        changed.add(key)
        if answer.overage > 0 and request.enforcement is not Enforcement.OFF:
            batch.audited.add(key)
            batch.entries.append(
                overage_entry(
                    request.ctx,
                    request.customer,
                    answer.feature,
                    request.enforcement,
                    answer.overage,
                    answer.standing,
                )
            )
    batch.states = {key: encode_state(*accounts[key]) for key in sorted(changed)}
    if not look_up_keys:
        refused = [
            request.idempotency_key
            for request, answer in zip(requests, batch.answers, strict=True)
            if isinstance(answer, QuotaExceeded | InsufficientBalance)
        ]
        # A refusal stores nothing, so no insert would reveal a retry of a consume that
        # was stored before the quota ran out; it must be answered `replayed`.
        if refused and await repository.events_by_keys(session, tenant_id, refused):
            raise KeyRaced(f"{len(refused)} refused keys, some stored already")
    return batch


async def _pay(
    session: AsyncSession, request: ConsumeRequest, answer: Consumed, batch: _Batch
) -> Consumed | InsufficientBalance:
    """Pay a drawn consume's overage from its wallet: the consume with its payment (and
    its entry for the event log), or the refusal that leaves it undrawn."""
    try:
        paid = await pay(
            session,
            request.ctx,
            catalog=request.catalog,
            quota=request.quota,
            customer=request.customer,
            idempotency_key=request.idempotency_key,
            properties=request.properties,
            amount=request.amount,
            overage=answer.overage,
            mode=request.enforcement,
        )
    except SpendExistsWithDifferentFields as error:
        # The spend's reference comes from the key, and is stored only with its consume:
        # the key is stored already. Run again with the keys looked up (`KeyRaced`).
        raise KeyRaced(f"key {request.idempotency_key!r} paid before") from error
    if isinstance(paid, InsufficientBalance):
        log.info(
            "consume refused, wallet short: tenant %s customer %s feature %s",
            request.ctx.tenant_id,
            request.customer,
            answer.feature,
            extra={"cost": paid.extra["cost"], "balance": paid.extra["balance"]},
        )
        return paid
    if paid.cost > 0:
        batch.entries.append(
            paid_entry(
                request.ctx,
                customer=request.customer,
                feature_key=answer.feature,
                event_id=answer.event_id,
                overage=answer.overage,
                mode=request.enforcement,
                payment=paid,
            )
        )
    return replace(answer, payment=paid)


def _wallets_of(requests: Sequence[ConsumeRequest]) -> set[tuple[str, str]]:
    """The (customer, unit) wallets the batch's consumes may draw."""
    return {
        (r.customer, r.quota.policy.wallet.unit)
        for r in requests
        if r.quota.policy.wallet is not None
    }


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
        entitlement = grants.entitlement_in(
            snapshot, catalog, request.customer, feature_key, ctx.now
        )
    else:  # a request that saw another catalog revision than the batch's first
        entitlement = await grants.entitlement_of(
            session, catalog, ctx.tenant_id, request.customer, feature_key, ctx.now, snapshots
        )
    return await position_of(
        session, ctx.tenant_id, request.customer, quota_def, entitlement, ctx.now, drawn
    )


def _type_of(request: ConsumeRequest) -> str:
    return request.quota.meter.event_type


class Known(NamedTuple):
    """A key stored already (or earlier in the batch): its event, and what its consume
    answered beyond the usage, which a replay answers again (decision 0047)."""

    event_id: str
    customer: str
    event_type: str
    # A consume's digest, or (for an event a consume did not store: reported, or stored
    # before migration 0009) its properties as sorted JSON, which a consume matches only
    # with the same usage.
    digest: str
    overage: Decimal  # 0 for a reported event, and a consume stored before 0021
    payment: Payment | None


def _outcome_of(outcome: Mapping[str, Any] | None) -> tuple[Decimal, Payment | None]:
    """The overage and payment a stored consume answered (`_usage_row` stored them)."""
    if outcome is None:
        return Decimal(0), None
    wallet = outcome.get("wallet")
    return Decimal(outcome["overage"]), None if wallet is None else Payment.from_json(wallet)


def _reported(properties: Mapping[str, Any]) -> str:
    return "event:" + sorted_json(dict(properties))


def _draw_one(
    request: ConsumeRequest,
    here: Position,
    drawn: Mapping[str, Decimal],
    known: Mapping[str, Known],
    event_id: str,
) -> tuple[Consumed | BillfoldError, dict[str, Decimal] | None]:
    """One consume's answer, given where its quota stands and the keys already used, and
    the account's totals after it (None when nothing is drawn). A new event gets
    `event_id`."""
    feature_key = request.quota.feature.key
    mode = request.enforcement
    earlier = known.get(request.idempotency_key)
    if earlier is not None:
        customer, event_type = earlier.customer, earlier.event_type
        if customer != request.customer or event_type != _type_of(request):
            reused = f"usage event {request.idempotency_key!r} is for {customer!r}, {event_type!r}"
            return IdempotencyKeyReused(reused), None
        if earlier.digest not in (request.digest, _reported(request.properties)):
            return IdempotencyKeyReused(
                f"idempotency key {request.idempotency_key!r} was first used for another "
                "consume or usage event (another amount, feature or properties); a retry "
                "must send the same body, and a new consume needs a new key"
            ), None
        # The first answer's overage and payment; where the quota stands now.
        replayed = Consumed(
            request.customer,
            feature_key,
            request.amount,
            mode,
            here.standing,
            earlier.overage,
            earlier.event_id,
            True,
            earlier.payment,
        )
        return replayed, None
    totals, overage = quota.draw(here.buckets, drawn, request.amount)
    policy = request.quota.policy
    if (
        overage > 0
        and mode is Enforcement.ENFORCE
        and policy.limit is LimitKind.HARD
        and not policy.overage
        and policy.wallet is None  # paid from a wallet: the wallet decides (`_pay`)
    ):
        standing = here.standing
        refusal = QuotaExceeded(
            f"{feature_key}: {request.amount} requested, {show(standing.remaining)} left"
            + (f" until {instant(standing.resets_at)}" if standing.resets_at else ""),
            extra={
                "feature": feature_key,
                "requested": show(request.amount),
                "remaining": show(standing.remaining),
                "used": show(standing.used),
                "limit": show(standing.limit),
                "resets_at": instant(standing.resets_at),
                "upgrade": upgrades(request.catalog, request.quota, here, drawn, request.amount),
            },
        )
        return refusal, None
    after = quota.standing(here.buckets, totals)
    consumed = Consumed(
        request.customer, feature_key, request.amount, mode, after, overage, event_id, False
    )
    return consumed, totals


def _usage_row(request: ConsumeRequest, answer: Consumed) -> dict[str, Any]:
    """The usage event a consume stores, with what its answer said beyond the usage (its
    `outcome`: the overage and the wallet payment, for a retry to answer the same)."""
    ctx = request.ctx
    outcome: dict[str, Any] | None = None
    if answer.overage > 0:
        outcome = {"overage": show(answer.overage)}
        if answer.payment is not None:
            outcome["wallet"] = answer.payment.as_json()
    return {
        "id": answer.event_id,
        "tenant_id": ctx.tenant_id,
        "idempotency_key": request.idempotency_key,
        "customer": request.customer,
        "type": _type_of(request),
        "service": None,
        "correlation_id": ctx.correlation_id,
        "occurred_at": ctx.now,
        "received_at": ctx.now,
        "properties": request.properties,
        "body_digest": request.digest,
        "outcome": outcome,
    }
