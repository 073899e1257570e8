"""Routes: split tables per app, settling a succeeded payment, and payout batches with
their CSV per payee. All admin: they say who is paid what."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from billfold.http.bodies import json_body_schema, read_json
from billfold.http.calls import AdminCall
from billfold.kit.ids import ID_PATTERN
from billfold.settlement import payouts, service
from billfold.settlement.payouts import CSV_MEDIA_TYPE
from billfold.settlement.records import CLIENT_ID, Policy, SettlementRequest
from billfold.settlement.schemas import (
    PayoutBatchOut,
    PayoutRunIn,
    SettlementIn,
    SettlementOut,
    SplitHistoryOut,
    SplitIn,
    SplitOut,
)
from billfold.settlement.splits import Share

router = APIRouter(tags=["settlement"])
AppId = Annotated[str, Path(pattern=CLIENT_ID.pattern, description="1 to 48 of A-Z a-z 0-9 _ . -")]
SettlementId = Annotated[str, Path(pattern=CLIENT_ID.pattern)]
BatchId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
PayeeId = Annotated[str, Path(min_length=1, max_length=200)]
MAX_PAGE_SIZE = 100
SPLIT_REFUSALS = (
    "`split_shares_not_100`, `split_share_not_positive`, `split_share_too_precise`, "
    "`invalid_payee`, `split_payee_duplicate`, `split_needs_one_creator`, `split_too_large`, "
    "`invalid_input`"
)


@router.put(
    "/v1/apps/{app_id}/splits",
    operation_id="putSplitTable",
    response_model=SplitOut,
    responses={422: {"description": SPLIT_REFUSALS}},
    openapi_extra=json_body_schema(SplitIn),
)
async def put_split(app_id: AppId, call: AdminCall) -> SplitOut:
    """Make this the app's split table: a new version, unless it is the current one
    already (then the current version is answered and nothing changes)."""
    body = await read_json(call.request, SplitIn)
    shares = [Share(share.payee, share.role, share.percent) for share in body.shares]
    table, _changed = await service.put_split(call.session, call.ctx, app_id, shares)
    return SplitOut.of(table)


@router.get(
    "/v1/apps/{app_id}/splits",
    operation_id="getSplitTable",
    response_model=SplitOut,
    responses={404: {"description": "`split_table_not_found`"}},
)
async def get_split(app_id: AppId, call: AdminCall) -> SplitOut:
    """The app's current split table."""
    return SplitOut.of(await service.split(call.session, call.ctx, app_id))


@router.get(
    "/v1/apps/{app_id}/splits/versions",
    operation_id="listSplitTableVersions",
    response_model=SplitHistoryOut,
    responses={404: {"description": "`split_table_not_found`"}},
)
async def split_history(
    app_id: AppId,
    call: AdminCall,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> SplitHistoryOut:
    """Every version of the app's split table, newest first."""
    tables = await service.split_history(call.session, call.ctx, app_id, before=before, limit=limit)
    last = tables[-1].version if len(tables) == limit and tables[-1].version > 1 else None
    return SplitHistoryOut(versions=[SplitOut.of(t) for t in tables], next_before=last)


@router.post(
    "/v1/settlements",
    operation_id="settlePayment",
    status_code=201,
    response_model=SettlementOut,
    responses={
        200: {"description": "a retry: the settlement made before under this id"},
        404: {"description": "`split_table_not_found` (platform mode)"},
        409: {"description": "`settlement_exists_with_different_fields`"},
        422: {
            "description": "`invalid_settlement`, `app_id_required`, `amount_not_positive`, "
            "`unknown_currency`, `invalid_input`"
        },
    },
    openapi_extra=json_body_schema(SettlementIn),
)
async def settle(call: AdminCall, response: Response) -> SettlementOut:
    """Record a succeeded payment and settle it in one linked ledger batch. Its `id` is
    its idempotency key: the same id with the same fields answers the same settlement
    (200), with other fields 409."""
    body = await read_json(call.request, SettlementIn)
    request = SettlementRequest(
        id=body.id,
        type=body.type,  # type: ignore[arg-type]  # checked by the service
        amount=body.amount,
        currency=body.currency,
        app_id=body.app_id,
        payer=body.payer,
        reference=body.reference,
    )
    made, created = await service.settle(
        call.session, call.ctx, request, policy=call.collaborator(Policy)
    )
    if not created:
        response.status_code = 200
    return SettlementOut.of(made)


@router.get(
    "/v1/settlements/{settlement_id}",
    operation_id="getSettlement",
    response_model=SettlementOut,
    responses={404: {"description": "`settlement_not_found`"}},
)
async def get_settlement(settlement_id: SettlementId, call: AdminCall) -> SettlementOut:
    return SettlementOut.of(await service.get(call.session, call.ctx, settlement_id))


@router.post(
    "/v1/payouts",
    operation_id="runPayouts",
    status_code=201,
    response_model=PayoutBatchOut,
    responses={
        200: {"description": "the period's batch, made before: nothing moved"},
        422: {"description": "`invalid_input` (a period that is not a label)"},
    },
    openapi_extra=json_body_schema(PayoutRunIn),
)
async def run_payouts(call: AdminCall, response: Response) -> PayoutBatchOut:
    """Pay out what every payee is owed, as `billfold payouts run` does: the period's
    batch, made now (201), or the one made before in this period (200; nothing moves)."""
    body = await read_json(call.request, PayoutRunIn)
    batch = await payouts.run(
        call.session, call.ctx, body.period or payouts.default_period(call.ctx)
    )
    if not batch.created:
        response.status_code = 200
    return PayoutBatchOut.of(batch)


@router.get(
    "/v1/payouts/{batch_id}",
    operation_id="getPayoutBatch",
    response_model=PayoutBatchOut,
    responses={404: {"description": "`payout_batch_not_found`"}},
)
async def get_payout_batch(batch_id: BatchId, call: AdminCall) -> PayoutBatchOut:
    return PayoutBatchOut.of(await payouts.batch(call.session, call.ctx, batch_id))


@router.get(
    "/v1/payouts/{batch_id}/payees/{payee_id}.csv",
    operation_id="getPayoutCsv",
    response_class=Response,
    responses={
        200: {"content": {CSV_MEDIA_TYPE: {}}},
        404: {"description": "`payout_batch_not_found` or `payout_payee_not_found`"},
    },
)
async def payout_csv(batch_id: BatchId, payee_id: PayeeId, call: AdminCall) -> Response:
    """What the batch pays one payee, one line per currency, as CSV."""
    batch = await payouts.batch(call.session, call.ctx, batch_id)
    return Response(payouts.payee_csv(batch, payee_id), media_type=CSV_MEDIA_TYPE)
