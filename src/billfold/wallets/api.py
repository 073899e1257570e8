"""Routes: wallets' balances and history, the pre-flight check, top-ups, holds and
low-balance thresholds (docs/wallets.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from billfold.http.bodies import json_body_schema, read_json, read_optional_json
from billfold.http.calls import AdminCall, CheckCall, ReadCall, ReportCall, idempotent
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.ids import ID_PATTERN, new_id
from billfold.kit.schemas import MAX_PAGE_SIZE, decode_cursor, encode_cursor
from billfold.wallets import holds, service, topups
from billfold.wallets.records import InvalidWalletRequest
from billfold.wallets.schemas import (
    HoldIn,
    HoldOut,
    MarkFailedIn,
    MarkPaidIn,
    MovementOut,
    SettleIn,
    ThresholdIn,
    TopUpIn,
    TopUpOut,
    TransactionsOut,
    WalletCheckIn,
    WalletCheckOut,
    WalletOut,
    WalletsOut,
)

router = APIRouter(tags=["wallets"])

ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
WalletId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
TopUpId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
HoldId = Annotated[str, Path(min_length=1, max_length=80)]
SHORT: dict[int | str, dict[str, Any]] = {
    402: {"description": "`insufficient_balance`, with `balance` and `shortfall`"}
}


@router.get(
    "/v1/customers/{external_id}/wallets",
    operation_id="listWallets",
    responses={404: {"description": "`customer_not_found`"}},
)
async def list_wallets(external_id: ExternalId, call: ReadCall) -> WalletsOut:
    """The customer's wallets, one per unit, with their balances now."""
    found = await service.wallets_of(call.session, call.ctx, external_id)
    return WalletsOut(customer_id=external_id, wallets=[WalletOut.of(each) for each in found])


@router.get(
    "/v1/wallets/{wallet_id}",
    operation_id="getWallet",
    responses={404: {"description": "`wallet_not_found`"}},
)
async def get_wallet(wallet_id: WalletId, call: ReadCall) -> WalletOut:
    found = await service.wallet(call.session, call.ctx, wallet_id)
    external_id = await service.customer_external_id(call.session, call.ctx, found)
    return WalletOut.of(await service.balance(call.session, call.ctx, external_id, found.unit))


@router.get(
    "/v1/wallets/{wallet_id}/transactions",
    operation_id="listWalletTransactions",
    responses={404: {"description": "`wallet_not_found`"}},
)
async def list_transactions(
    wallet_id: WalletId,
    call: ReadCall,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> TransactionsOut:
    """The ledger transfers into and out of the wallet's lots, newest first."""
    page = await service.transactions(
        call.session, call.ctx, wallet_id, before=_position(cursor), limit=limit + 1
    )
    more = len(page) > limit
    page = page[:limit]
    last = page[-1] if more and page else None
    return TransactionsOut(
        wallet_id=wallet_id,
        transactions=[MovementOut.of(each) for each in page],
        next_cursor=(
            encode_cursor(f"{last.created_at.isoformat()}|{last.transfer_id}") if last else None
        ),
    )


def _position(cursor: str | None) -> tuple[datetime, str] | None:
    decoded = decode_cursor(cursor)
    if decoded is None:
        return None
    at, _, transfer_id = decoded.partition("|")
    refusal = InvalidInput(
        "the cursor is not valid",
        errors=[FieldError("not a cursor we issued", parameter="cursor")],
    )
    try:
        instant = datetime.fromisoformat(at)
    except ValueError:
        raise refusal from None
    if instant.tzinfo is None or not transfer_id:
        raise refusal
    return instant, transfer_id


@router.post(
    "/v1/wallets/check",
    operation_id="checkWallet",
    openapi_extra=json_body_schema(WalletCheckIn),
)
async def check_wallet(call: CheckCall) -> WalletCheckOut:
    """Can the customer afford an estimated cost? Changes nothing."""
    body = await read_json(call.request, WalletCheckIn)
    service.check_amount(body.amount)
    found = await service.balance(call.session, call.ctx, body.customer_id, body.unit)
    shortfall = max(0, body.amount - found.available)
    return WalletCheckOut(
        allowed=shortfall == 0,
        unit=body.unit,
        amount=body.amount,
        available=found.available,
        shortfall=shortfall,
    )


@router.post(
    "/v1/wallets/top-ups",
    operation_id="createTopUp",
    status_code=201,
    responses={409: {"description": "`top_up_exists_with_different_fields`"}},
    openapi_extra=json_body_schema(TopUpIn),
)
@idempotent
async def create_top_up(call: AdminCall) -> TopUpOut:
    """Credit a wallet from a grant or a promotion (now), or from a payment (pending until
    it is paid). `reference` is the top-up's client id; or send an Idempotency-Key."""
    body = await read_json(call.request, TopUpIn)
    if body.expires_at is not None and body.expires_in_days is not None:
        raise InvalidWalletRequest(
            "give expires_at or expires_in_days, not both",
            errors=[FieldError("given twice", pointer="#/expires_in_days")],
        )
    expires_at = body.expires_at
    if body.expires_in_days is not None:
        expires_at = call.ctx.now + timedelta(days=body.expires_in_days)
    made = await topups.top_up(
        call.session,
        call.ctx,
        customer_id=body.customer_id,
        unit=body.unit,
        amount=body.amount,
        source=body.source,
        reference=body.reference or new_id("ref"),
        expires_at=expires_at,
        priority=body.priority,
    )
    return TopUpOut.of(made)


@router.get(
    "/v1/wallets/top-ups/{top_up_id}",
    operation_id="getTopUp",
    responses={404: {"description": "`top_up_not_found`"}},
)
async def get_top_up(top_up_id: TopUpId, call: ReadCall) -> TopUpOut:
    return TopUpOut.of(await topups.get_top_up(call.session, call.ctx, top_up_id))


@router.post(
    "/v1/wallets/top-ups/{top_up_id}/mark-paid",
    operation_id="markTopUpPaid",
    responses={
        404: {"description": "`top_up_not_found`"},
        409: {"description": "`top_up_already_resolved`"},
    },
    openapi_extra=json_body_schema(MarkPaidIn, required=False),
)
async def mark_paid(top_up_id: TopUpId, call: AdminCall) -> TopUpOut:
    """A manual payment: the top-up's payment succeeded, so its credit is added."""
    body = await read_optional_json(call.request, MarkPaidIn)
    made = await topups.payment_succeeded(
        call.session,
        call.ctx,
        top_up_id=top_up_id,
        payment_reference=body.payment_reference if body else None,
    )
    return TopUpOut.of(made)


@router.post(
    "/v1/wallets/top-ups/{top_up_id}/mark-failed",
    operation_id="markTopUpFailed",
    responses={
        404: {"description": "`top_up_not_found`"},
        409: {"description": "`top_up_already_resolved`"},
    },
    openapi_extra=json_body_schema(MarkFailedIn),
)
async def mark_failed(top_up_id: TopUpId, call: AdminCall) -> TopUpOut:
    body = await read_json(call.request, MarkFailedIn)
    made = await topups.payment_failed(
        call.session, call.ctx, top_up_id=top_up_id, reason=body.reason
    )
    return TopUpOut.of(made)


@router.post(
    "/v1/wallets/thresholds",
    operation_id="setWalletThreshold",
    openapi_extra=json_body_schema(ThresholdIn),
)
async def set_threshold(call: AdminCall) -> WalletOut:
    """Set the wallet's low-balance threshold (null clears it)."""
    body = await read_json(call.request, ThresholdIn)
    found = await service.set_low_balance(
        call.session,
        call.ctx,
        customer_id=body.customer_id,
        unit=body.unit,
        low_balance=body.low_balance,
    )
    return WalletOut.of(found)


@router.post(
    "/v1/wallets/holds",
    operation_id="createHold",
    status_code=201,
    responses={**SHORT, 409: {"description": "`hold_exists_with_different_fields`"}},
    openapi_extra=json_body_schema(HoldIn),
)
async def create_hold(call: ReportCall) -> HoldOut:
    """Reserve part of a wallet for a long-running workflow, until `timeout_s`."""
    body = await read_json(call.request, HoldIn)
    hold = await holds.create_hold(
        call.session,
        call.ctx,
        customer_id=body.customer_id,
        unit=body.unit,
        amount=body.amount,
        hold_id=body.hold_id,
        timeout_s=body.timeout_s,
    )
    return HoldOut.of(hold)


@router.get(
    "/v1/wallets/holds/{hold_id}",
    operation_id="getHold",
    responses={404: {"description": "`hold_not_found`"}},
)
async def get_hold(hold_id: HoldId, call: ReadCall) -> HoldOut:
    return HoldOut.of(await holds.get_hold(call.session, call.ctx, hold_id))


@router.post(
    "/v1/wallets/holds/{hold_id}/settle",
    operation_id="settleHold",
    responses={
        **SHORT,
        404: {"description": "`hold_not_found`"},
        409: {"description": "`hold_already_resolved` or `hold_expired`"},
    },
    openapi_extra=json_body_schema(SettleIn),
)
async def settle_hold(hold_id: HoldId, call: ReportCall) -> HoldOut:
    """Settle the hold to the actual amount; past the hold, the excess is drawn too."""
    body = await read_json(call.request, SettleIn)
    hold = await holds.settle_hold(call.session, call.ctx, hold_id=hold_id, amount=body.amount)
    return HoldOut.of(hold)


@router.post(
    "/v1/wallets/holds/{hold_id}/release",
    operation_id="releaseHold",
    responses={
        404: {"description": "`hold_not_found`"},
        409: {"description": "`hold_already_resolved`"},
    },
)
async def release_hold(hold_id: HoldId, call: ReportCall) -> HoldOut:
    """Release the whole hold: the workflow failed or was cancelled."""
    return HoldOut.of(await holds.release_hold(call.session, call.ctx, hold_id=hold_id))
