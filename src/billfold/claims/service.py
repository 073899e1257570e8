"""Claim codes: issue them in batches, redeem them into grants, revoke them.

A batch grants a plan, or one feature and its value (`devmode.enabled` for 90 days), or
wallet credit (`500 credits`, expiring 30 days after the redemption), or a plan or
feature and wallet credit; and it carries metadata of bounded size (campaign, tier, and
whatever the issuer keeps with it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.features import FeatureType, parse_value, to_json
from billfold.claims import codes, repository
from billfold.customers import service as customers
from billfold.grants import repository as grants_repository
from billfold.grants import service as grants
from billfold.grants.lookup import grant_from_row
from billfold.grants.resolution import Grant
from billfold.grants.service import Window
from billfold.kit import eventlog, ratelimit
from billfold.kit.context import Context
from billfold.kit.errors import BillfoldError, Conflict, FieldError, Gone, InvalidInput, NotFound
from billfold.kit.ids import new_id
from billfold.kit.invariants import invariant
from billfold.kit.text import json_faults
from billfold.wallets import service as wallets
from billfold.wallets.records import DEFAULT_PRIORITY, Lot

MAX_BATCH_SIZE = 10_000
MAX_REDEMPTIONS_PER_CODE = 1_000_000
SOURCE_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
DURATION = re.compile(r"^([1-9][0-9]{0,4})d$")
LIFETIME = "lifetime"
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_LENGTH = 100
MAX_METADATA_BYTES = 4096  # the metadata as compact UTF-8 JSON
MAX_CREDIT_DAYS = 36_500
# What a redemption adds to its grant's metadata; a batch may not set them.
RESERVED_METADATA = frozenset({"claim_batch_id", "claim_code_id"})


class ClaimCodeMalformed(BillfoldError):
    status = 422
    code = "claim_code_malformed"
    title = "That is not a claim code"


class ClaimCodeUnknown(NotFound):
    code = "claim_code_unknown"


class ClaimCodeExpired(Gone):
    code = "claim_code_expired"


class ClaimCodeRevoked(Gone):
    code = "claim_code_revoked"


class ClaimCodeExhausted(Conflict):
    code = "claim_code_exhausted"


class ClaimBatchNotFound(NotFound):
    code = "claim_batch_not_found"


@dataclass(frozen=True)
class WalletCredit:
    """Wallet credit a redemption adds: `amount` of `unit`, as a lot of source `claim`
    with `priority`, expiring `expires_in_days` after the redemption (None: never)."""

    unit: str
    amount: int
    expires_in_days: int | None = None
    priority: int = DEFAULT_PRIORITY


@dataclass(frozen=True)
class BatchRequest:
    """Codes that grant `plan`, or `feature` with `value` (a boolean feature's defaults
    to true), at most one of the two; and/or `wallet_credit`."""

    plan: str | None
    count: int
    duration_days: int | None  # None: lifetime
    max_redemptions: int
    expires_at: datetime | None
    source: str
    metadata: dict[str, Any]
    feature: str | None = None
    value: Any = None
    wallet_credit: WalletCredit | None = None


@dataclass(frozen=True)
class Batch:
    id: str
    plan: str | None
    count: int
    duration_days: int | None
    max_redemptions: int
    expires_at: datetime | None
    source: str
    metadata: dict[str, Any]
    created_at: datetime
    feature: str | None = None
    value: Any = None  # the feature's value as JSON, as grants store it
    wallet_credit: WalletCredit | None = None


@dataclass(frozen=True)
class Redemption:
    customer: str
    code_id: str
    batch_id: str
    plan: str | None
    feature: str | None
    grant: Grant | None  # None for a code of wallet credit alone
    redeemed_at: datetime
    replayed: bool
    lot: Lot | None = None  # the wallet credit it added


def parse_duration(text: str, *, pointer: str = "#/duration") -> int | None:
    """`365d` -> 365 days; `lifetime` -> None."""
    if text == LIFETIME:
        return None
    match = DURATION.match(text)
    if match is None:
        raise InvalidInput(
            f"duration {text!r} is not valid",
            errors=[
                FieldError(
                    'expected a number of days such as "365d", or "lifetime"', pointer=pointer
                )
            ],
        )
    return int(match.group(1))


def check_source(source: str, *, pointer: str = "#/source") -> str:
    if not SOURCE_LABEL.match(source):
        raise InvalidInput(
            f"source {source!r} is not valid",
            errors=[FieldError("lowercase letters, digits, - and _, at most 40", pointer=pointer)],
        )
    return source


def check_metadata(metadata: dict[str, Any], *, pointer: str = "#/metadata") -> dict[str, Any]:
    """A batch's metadata: at most 20 keys of at most 100 characters, JSON values that
    every backend stores as sent (`billfold.kit.text`), at most 4 KB as compact JSON."""

    def refuse(message: str, where: str = pointer) -> InvalidInput:
        return InvalidInput(
            "the metadata is not valid", errors=[FieldError(message, pointer=where)]
        )

    if len(metadata) > MAX_METADATA_KEYS:
        raise refuse(f"at most {MAX_METADATA_KEYS} keys, found {len(metadata)}")
    for key in metadata:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH:
            raise refuse(f"keys are text of 1 to {MAX_METADATA_KEY_LENGTH} characters")
        if key in RESERVED_METADATA:
            raise refuse("set by each redemption; choose another key", f"{pointer}/{key}")
    for path, fault in json_faults(metadata):
        raise refuse(fault, "/".join([pointer, *(str(part) for part in path)]))
    encoded = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"))
    if len(encoded.encode("utf-8")) > MAX_METADATA_BYTES:
        raise refuse(f"at most {MAX_METADATA_BYTES} bytes as JSON")
    return dict(metadata)


def _what_it_grants(catalog: Catalog, request: BatchRequest) -> tuple[str | None, Any]:
    """The plan's id, or None and the feature's value as JSON, that the batch grants
    (None and None: wallet credit alone)."""
    if request.plan is not None and request.feature is not None:
        raise InvalidInput(
            "a batch grants either a plan or a feature",
            errors=[FieldError("give at most one of plan and feature", pointer="#/plan")],
        )
    if request.plan is None and request.feature is None:
        if request.wallet_credit is not None:
            if request.value is not None:
                raise InvalidInput(
                    "a value goes with a feature",
                    errors=[FieldError("only with feature", pointer="#/value")],
                )
            return None, None
        raise InvalidInput(
            "a batch grants a plan, a feature or wallet credit",
            errors=[FieldError("give one of plan, feature and wallet_credit", pointer="#/plan")],
        )
    if request.plan is not None:
        if request.value is not None:
            raise InvalidInput(
                "a plan's codes take no value",
                errors=[FieldError("only with feature", pointer="#/value")],
            )
        return catalog.require_plan(request.plan).plan_id, None
    assert request.feature is not None  # for the type checker: checked above
    feature = catalog.require_feature(request.feature)
    raw = request.value
    if raw is None and feature.type is FeatureType.BOOLEAN:
        raw = True
    if raw is None:
        raise InvalidInput(
            f"codes for {feature.type} feature {feature.key!r} need a value",
            errors=[FieldError("required with a feature that is not boolean", pointer="#/value")],
        )
    value = parse_value(feature.type, raw)
    if isinstance(value, str):
        raise InvalidInput(
            f"not a value for {feature.type} feature {feature.key!r}",
            errors=[FieldError(value, pointer="#/value")],
        )
    return None, to_json(value)


async def create_batch(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    request: BatchRequest,
    *,
    secret_key: bytes,
) -> tuple[Batch, list[str]]:
    """Issue `count` fresh codes. The codes are returned once; only their keyed hashes stay."""
    plan_id, value = _what_it_grants(catalog, request)
    credit = request.wallet_credit
    if credit is not None:
        _check_wallet_credit(credit)
    check_source(request.source)
    metadata = check_metadata(request.metadata)
    if not 1 <= request.count <= MAX_BATCH_SIZE:
        raise InvalidInput(
            "count is out of range",
            errors=[FieldError(f"between 1 and {MAX_BATCH_SIZE}", pointer="#/count")],
        )
    if not 1 <= request.max_redemptions <= MAX_REDEMPTIONS_PER_CODE:
        raise InvalidInput(
            "max_redemptions is out of range",
            errors=[
                FieldError(f"between 1 and {MAX_REDEMPTIONS_PER_CODE}", pointer="#/max_redemptions")
            ],
        )
    if request.expires_at is not None and request.expires_at <= ctx.now:
        raise InvalidInput(
            "the codes would be expired already",
            errors=[FieldError("must be in the future", pointer="#/expires_at")],
        )
    batch = Batch(
        id=new_id("clb"),
        plan=request.plan,
        count=request.count,
        duration_days=request.duration_days,
        max_redemptions=request.max_redemptions,
        expires_at=request.expires_at,
        source=request.source,
        metadata=metadata,
        created_at=ctx.now,
        feature=request.feature,
        value=value,
        wallet_credit=credit,
    )
    await repository.insert_batch(
        session,
        id=batch.id,
        tenant_id=ctx.tenant_id,
        plan_id=plan_id,
        feature_key=batch.feature,
        feature_value=batch.value,
        source=batch.source,
        duration_days=batch.duration_days,
        max_redemptions=batch.max_redemptions,
        expires_at=batch.expires_at,
        code_count=batch.count,
        metadata=batch.metadata,
        created_at=ctx.now,
        wallet_unit=credit.unit if credit else None,
        wallet_amount=credit.amount if credit else None,
        wallet_expires_in_days=credit.expires_in_days if credit else None,
        wallet_priority=credit.priority if credit else None,
    )
    issued = [codes.generate() for _ in range(request.count)]
    await repository.insert_codes(
        session,
        [
            {
                "id": new_id("clm"),
                "tenant_id": ctx.tenant_id,
                "batch_id": batch.id,
                "code_hash": codes.keyed_hash(secret_key, _normalized(code)),
                "redemption_count": 0,
                "revoked_at": None,
                "created_at": ctx.now,
            }
            for code in issued
        ],
    )
    await eventlog.record(
        session,
        ctx,
        "ClaimBatchCreated",
        {
            "batch_id": batch.id,
            "plan": batch.plan,
            "feature": batch.feature,
            "value": batch.value,
            "count": batch.count,
            "duration_days": batch.duration_days,
            "max_redemptions": batch.max_redemptions,
            "expires_at": batch.expires_at.isoformat() if batch.expires_at else None,
            "source": batch.source,
            "metadata": batch.metadata,
            "wallet_credit": None if credit is None else vars(credit),
        },
    )
    return batch, issued


def _check_wallet_credit(credit: WalletCredit) -> None:
    wallets.check_unit(credit.unit, pointer="#/wallet_credit/unit")
    wallets.check_amount(credit.amount, pointer="#/wallet_credit/amount")
    wallets.check_priority(credit.priority, pointer="#/wallet_credit/priority")
    days = credit.expires_in_days
    if days is not None and not 1 <= days <= MAX_CREDIT_DAYS:
        raise InvalidInput(
            "expires_in_days is out of range",
            errors=[
                FieldError(
                    f"between 1 and {MAX_CREDIT_DAYS}", pointer="#/wallet_credit/expires_in_days"
                )
            ],
        )


@dataclass(frozen=True)
class Attempts:
    """How many redemption attempts one customer, and one client address, may make in
    a window of `window_s` seconds: a brute-force guess of codes runs into both."""

    per_customer: int
    per_address: int
    window_s: int


async def attempt_redemption(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    *,
    external_id: str,
    code: str,
    client_address: str,
    attempts: Attempts,
    secret_key: bytes,
) -> Redemption:
    """Count the attempt against the customer's and the address's limits, then redeem in
    a savepoint: a refusal undoes the redemption's writes but not the count, which
    stands once the caller commits."""
    customers.check_external_id(external_id, pointer="#/customer")
    for key, limit in (
        (f"claims:customer:{ctx.tenant_id}:{external_id}", attempts.per_customer),
        (f"claims:address:{ctx.tenant_id}:{client_address}", attempts.per_address),
    ):
        await ratelimit.hit(session, key, limit=limit, window_s=attempts.window_s, now=ctx.now)
    async with session.begin_nested():
        return await redeem(
            session, ctx, catalog, external_id=external_id, code=code, secret_key=secret_key
        )


async def redeem(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    *,
    external_id: str,
    code: str,
    secret_key: bytes,
) -> Redemption:
    """Turn a code into a grant for a customer. Redeeming the same code again answers the
    same and grants nothing more; concurrent redemptions never exceed max_redemptions."""
    normalized = codes.normalize(code)
    if normalized is None:
        raise ClaimCodeMalformed(
            "that is not a claim code: check it for typos",
            errors=[FieldError("expected a code like 7KQM-X2HD-9TWP-R4CE-NV3B", pointer="#/code")],
        )
    row = await repository.code_by_hash(
        session, ctx.tenant_id, codes.keyed_hash(secret_key, normalized)
    )
    if row is None:
        raise ClaimCodeUnknown("no such claim code")
    customer = await customers.ensure(session, ctx, external_id)
    earlier = await repository.redemption_of(session, row.id, customer.id)
    if earlier is not None:
        return await _replay(session, ctx, catalog, row, earlier, external_id)
    if row.revoked_at is not None:
        raise ClaimCodeRevoked("this claim code has been revoked")
    if row.expires_at is not None and row.expires_at <= ctx.now:
        raise ClaimCodeExpired(f"this claim code expired at {row.expires_at.isoformat()}")
    if row.feature_key is not None:
        catalog.require_feature(row.feature_key, pointer="#/code")
        version = None
    elif row.plan_key is not None:
        version = catalog.require_plan(row.plan_key, pointer="#/code")
    else:
        version = None  # wallet credit alone
    window = Window(
        ctx.now, None if row.duration_days is None else ctx.now + timedelta(days=row.duration_days)
    )
    metadata = {**row.metadata, "claim_batch_id": row.batch_id, "claim_code_id": row.id}
    try:
        async with session.begin_nested():
            if not await repository.take_redemption(session, row.id, row.max_redemptions):
                raise ClaimCodeExhausted("this claim code has been redeemed as often as it may")
            grant: Grant | None = None
            if row.feature_key is not None:
                grant = await grants.grant_feature(
                    session,
                    ctx,
                    catalog,
                    customer,
                    row.feature_key,
                    row.feature_value,
                    window,
                    source=row.source,
                    metadata=metadata,
                )
            elif version is not None:
                grant = await grants.grant_plan(
                    session, ctx, customer, version, window, source=row.source, metadata=metadata
                )
            lot = await _credit_wallet(session, ctx, row, customer.id, external_id)
            await repository.insert_redemption(
                session,
                id=new_id("red"),
                tenant_id=ctx.tenant_id,
                code_id=row.id,
                customer_id=customer.id,
                grant_id=None if grant is None else grant.id,
                lot_id=None if lot is None else lot.id,
                created_at=ctx.now,
            )
    except IntegrityError:
        # The same customer redeemed the same code concurrently, and that one committed.
        earlier = await repository.redemption_of(session, row.id, customer.id)
        if earlier is None:
            raise
        return await _replay(session, ctx, catalog, row, earlier, external_id)
    except ClaimCodeExhausted:
        # The same customer may have taken the last redemption concurrently: answer that.
        earlier = await repository.redemption_of(session, row.id, customer.id)
        if earlier is not None:
            return await _replay(session, ctx, catalog, row, earlier, external_id)
        fresh = await repository.code_by_hash(
            session, ctx.tenant_id, codes.keyed_hash(secret_key, normalized)
        )
        if fresh is not None and fresh.revoked_at is not None:
            raise ClaimCodeRevoked("this claim code has been revoked") from None
        raise
    await eventlog.record(
        session,
        ctx,
        "ClaimCodeRedeemed",
        {
            "claim_code_id": row.id,
            "batch_id": row.batch_id,
            "grant_id": None if grant is None else grant.id,
            "lot_id": None if lot is None else lot.id,
            "transfer_ids": [] if lot is None else [lot.transfer_id],
        },
        customer_id=customer.id,
    )
    return Redemption(
        customer=external_id,
        code_id=row.id,
        batch_id=row.batch_id,
        plan=row.plan_key,
        feature=row.feature_key,
        grant=grant,
        redeemed_at=ctx.now,
        replayed=False,
        lot=lot,
    )


async def _credit_wallet(
    session: AsyncSession, ctx: Context, row: Any, customer_id: str, external_id: str
) -> Lot | None:
    """The wallet credit of the code's batch, as a lot of source `claim` whose reference
    is the (code, customer) pair: one lot per redemption, however it is retried."""
    if row.wallet_unit is None:
        return None
    days = row.wallet_expires_in_days
    return await wallets.credit(
        session,
        ctx,
        customer_id=external_id,
        unit=row.wallet_unit,
        amount=int(row.wallet_amount),
        source="claim",
        reference=f"claim:{row.id}:{customer_id}",
        expires_at=None if days is None else ctx.now + timedelta(days=days),
        priority=int(row.wallet_priority),
    )


async def _replay(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    code_row: Any,
    redemption: Any,
    external_id: str,
) -> Redemption:
    grant = None
    if redemption.grant_id is not None:
        grant_row = await grants_repository.by_id(session, ctx.tenant_id, redemption.grant_id)
        invariant(grant_row is not None, "a redemption's grant exists")
        assert grant_row is not None  # for the type checker
        grant = grant_from_row(catalog, grant_row)
    lot = None
    if redemption.lot_id is not None:
        lot = await wallets.lot(session, ctx, redemption.lot_id)
    return Redemption(
        customer=external_id,
        code_id=code_row.id,
        batch_id=code_row.batch_id,
        plan=code_row.plan_key,
        feature=code_row.feature_key,
        grant=grant,
        redeemed_at=redemption.created_at,
        replayed=True,
        lot=lot,
    )


async def revoke_code(session: AsyncSession, ctx: Context, *, code: str, secret_key: bytes) -> int:
    normalized = codes.normalize(code)
    if normalized is None:
        raise ClaimCodeMalformed(
            "that is not a claim code", errors=[FieldError("check it for typos", pointer="#/code")]
        )
    row = await repository.code_by_hash(
        session, ctx.tenant_id, codes.keyed_hash(secret_key, normalized)
    )
    if row is None:
        raise ClaimCodeUnknown("no such claim code")
    revoked = await repository.revoke_code(session, ctx.tenant_id, row.id, ctx.now)
    if revoked:
        await eventlog.record(
            session, ctx, "ClaimCodesRevoked", {"claim_code_id": row.id, "batch_id": row.batch_id}
        )
    return revoked


async def revoke_batch(session: AsyncSession, ctx: Context, batch_id: str) -> int:
    if await repository.batch_by_id(session, ctx.tenant_id, batch_id) is None:
        raise ClaimBatchNotFound(f"no claim batch {batch_id!r}")
    revoked = await repository.revoke_batch(session, ctx.tenant_id, batch_id, ctx.now)
    if revoked:
        await eventlog.record(
            session, ctx, "ClaimCodesRevoked", {"batch_id": batch_id, "codes": revoked}
        )
    return revoked


def _normalized(code: str) -> str:
    normalized = codes.normalize(code)
    invariant(normalized is not None, "a generated code normalizes")
    assert normalized is not None  # for the type checker
    return normalized
