"""Routes: issue claim codes, redeem them, revoke them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import Field

from billfold.claims import service
from billfold.claims.deps import Claims
from billfold.claims.export import CSV_MEDIA_TYPE, batch_metadata, csv_of, duration_label
from billfold.claims.service import BatchRequest, WalletCredit
from billfold.grants.schemas import FeatureValueIn, FeatureValueOut, GrantOut
from billfold.http.bodies import json_body_schema, read_json
from billfold.http.calls import AdminCall, RedeemCall
from billfold.http.problems import problem_for
from billfold.kit.errors import BillfoldError
from billfold.kit.ids import ID_PATTERN
from billfold.kit.schemas import Body, Instant, Out, Storable, StorableJSON
from billfold.wallets.records import Lot

router = APIRouter(tags=["claims"])
BatchId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
# A batch's metadata, with the bound the service keeps (service.check_metadata), so the
# OpenAPI document states the real one.
ClaimMetadata = Annotated[dict[str, Any], Field(max_length=service.MAX_METADATA_KEYS), StorableJSON]


class WalletCreditIn(Body):
    """Wallet credit each redemption adds (a lot of source `claim`, docs/wallets.md)."""

    unit: Annotated[str, Field(min_length=1, max_length=32, examples=["credits"])]
    amount: int
    expires_in_days: Annotated[int, Field(ge=1, le=service.MAX_CREDIT_DAYS)] | None = None
    priority: Annotated[int, Field(ge=0, le=1_000_000)] = 100


class WalletCreditOut(Out):
    unit: str
    amount: int
    expires_in_days: int | None
    priority: int


class LotOut(Out):
    lot_id: str
    wallet_id: str
    unit: str
    amount: int
    priority: int
    expires_at: datetime | None
    transfer_id: str


class BatchIn(Body):
    """Codes that grant a plan (`plan`), or one feature (`feature`, and `value` unless
    the feature is boolean, whose value is true by default), and/or wallet credit
    (`wallet_credit`)."""

    plan: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    feature: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    value: FeatureValueIn | None = None
    count: Annotated[int, Field(ge=1, le=service.MAX_BATCH_SIZE)]
    duration: Annotated[str, Field(max_length=20, description='"365d" or "lifetime"')]
    max_redemptions: Annotated[int, Field(ge=1, le=service.MAX_REDEMPTIONS_PER_CODE)] = 1
    expires_at: Instant | None = None
    source: Annotated[str, Field(pattern=service.SOURCE_LABEL.pattern)] = "claim"
    campaign: Annotated[str, Field(max_length=200), Storable] | None = None
    tier: Annotated[str, Field(max_length=200), Storable] | None = None
    metadata: ClaimMetadata = Field(
        default_factory=dict,
        description=f"at most {service.MAX_METADATA_KEYS} keys and "
        f"{service.MAX_METADATA_BYTES} bytes as JSON; kept on every grant a code makes",
    )
    wallet_credit: WalletCreditIn | None = None


class BatchOut(Out):
    id: str
    plan: str | None
    feature: str | None = None
    value: FeatureValueOut | None = None
    count: int
    duration: str
    max_redemptions: int
    expires_at: datetime | None
    source: str
    metadata: dict[str, Any]
    created_at: datetime
    wallet_credit: WalletCreditOut | None = None
    codes: list[str] = Field(description="shown once; only keyed hashes are stored")


class RedeemIn(Body):
    customer: Annotated[str, Field(min_length=1, max_length=255), Storable]
    code: Annotated[str, Field(min_length=1, max_length=64)]


class RedemptionOut(Out):
    customer: str
    plan: str | None
    feature: str | None = None
    batch_id: str
    redeemed_at: datetime
    replayed: bool = Field(description="true when this customer had redeemed this code before")
    grant: GrantOut | None = Field(description="null for a code of wallet credit alone")
    wallet_credit: LotOut | None = None


class RevokeCodeIn(Body):
    code: Annotated[str, Field(min_length=1, max_length=64)]


class RevokedOut(Out):
    revoked: int


@router.post(
    "/v1/claims/batches",
    operation_id="createClaimBatch",
    status_code=201,
    response_model=BatchOut,
    responses={
        201: {"content": {CSV_MEDIA_TYPE: {}}},
        404: {"description": "`plan_not_found` or `feature_not_found`"},
    },
    openapi_extra=json_body_schema(BatchIn),
)
async def create_batch(call: AdminCall, request: Request) -> Any:
    """Issue claim codes. `Accept: text/csv` answers the same CSV as the CLI."""
    body = await read_json(request, BatchIn)
    batch, issued = await service.create_batch(
        call.session,
        call.ctx,
        await call.catalog(),
        BatchRequest(
            plan=body.plan,
            feature=body.feature,
            value=body.value,
            count=body.count,
            duration_days=service.parse_duration(body.duration),
            max_redemptions=body.max_redemptions,
            expires_at=body.expires_at,
            source=body.source,
            metadata=batch_metadata(body.campaign, body.tier, body.metadata),
            wallet_credit=(
                None
                if body.wallet_credit is None
                else WalletCredit(
                    unit=body.wallet_credit.unit,
                    amount=body.wallet_credit.amount,
                    expires_in_days=body.wallet_credit.expires_in_days,
                    priority=body.wallet_credit.priority,
                )
            ),
        ),
        secret_key=call.collaborator(Claims).secret_key,
    )
    if CSV_MEDIA_TYPE in request.headers.get("accept", ""):
        return Response(csv_of(batch, issued), status_code=201, media_type=CSV_MEDIA_TYPE)
    return BatchOut(
        id=batch.id,
        plan=batch.plan,
        feature=batch.feature,
        value=batch.value,
        count=batch.count,
        duration=duration_label(batch.duration_days),
        max_redemptions=batch.max_redemptions,
        expires_at=batch.expires_at,
        source=batch.source,
        metadata=batch.metadata,
        created_at=batch.created_at,
        wallet_credit=(
            None if batch.wallet_credit is None else WalletCreditOut(**vars(batch.wallet_credit))
        ),
        codes=issued,
    )


@router.post(
    "/v1/claims/redeem",
    operation_id="redeemClaimCode",
    response_model=RedemptionOut,
    responses={
        404: {"description": "claim_code_unknown"},
        409: {"description": "claim_code_exhausted"},
        410: {"description": "claim_code_expired or claim_code_revoked"},
        422: {"description": "claim_code_malformed or invalid_input"},
        429: {"description": "rate_limited"},
    },
    openapi_extra=json_body_schema(RedeemIn),
)
async def redeem(call: RedeemCall, request: Request) -> Any:
    """Redeem a code for a customer. Redeeming it again answers the same, granting nothing."""
    body = await read_json(request, RedeemIn)
    claims = call.collaborator(Claims)
    catalog = await call.catalog()
    try:
        redemption = await service.attempt_redemption(
            call.session,
            call.ctx,
            catalog,
            external_id=body.customer,
            code=body.code,
            client_address=call.client_address,
            attempts=claims.attempts,
            secret_key=claims.secret_key,
        )
    except BillfoldError as refusal:
        # Answer the refusal but keep the attempt counted: the transaction still commits.
        return problem_for(request, refusal)
    return RedemptionOut(
        customer=redemption.customer,
        plan=redemption.plan,
        feature=redemption.feature,
        batch_id=redemption.batch_id,
        redeemed_at=redemption.redeemed_at,
        replayed=redemption.replayed,
        grant=(
            None
            if redemption.grant is None
            else GrantOut.of(catalog, redemption.customer, redemption.grant, call.ctx.now)
        ),
        wallet_credit=None if redemption.lot is None else _lot_out(redemption.lot),
    )


def _lot_out(lot: Lot) -> LotOut:
    return LotOut(
        lot_id=lot.id,
        wallet_id=lot.wallet_id,
        unit=lot.unit,
        amount=lot.amount,
        priority=lot.priority,
        expires_at=lot.expires_at,
        transfer_id=lot.transfer_id,
    )


@router.post(
    "/v1/claims/revoke",
    operation_id="revokeClaimCode",
    responses={404: {"description": "`claim_code_unknown`"}},
    openapi_extra=json_body_schema(RevokeCodeIn),
)
async def revoke_code(call: AdminCall) -> RevokedOut:
    """Revoke one code, presented in full (only its hash is stored)."""
    body = await read_json(call.request, RevokeCodeIn)
    revoked = await service.revoke_code(
        call.session, call.ctx, code=body.code, secret_key=call.collaborator(Claims).secret_key
    )
    return RevokedOut(revoked=revoked)


@router.post(
    "/v1/claims/batches/{batch_id}/revoke",
    operation_id="revokeClaimBatch",
    responses={404: {"description": "`claim_batch_not_found`"}},
)
async def revoke_batch(batch_id: BatchId, call: AdminCall) -> RevokedOut:
    return RevokedOut(revoked=await service.revoke_batch(call.session, call.ctx, batch_id))
