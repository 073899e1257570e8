"""Routes: the ledger's accounts and transfers (admin keys; reads with any read key).

A transfer's id is its idempotency key, and an account's code is its: a retry of either
answers what is stored, so neither route needs an `Idempotency-Key`. Transfers are
committed through the group commit (`TransferBatcher`), each request answered on its own.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from billfold.http.bodies import json_body_schema, read_json
from billfold.http.calls import AdminCall, Call, ReadCall, authorize
from billfold.kit.errors import FieldError
from billfold.kit.schemas import MAX_PAGE_SIZE
from billfold.ledger import reading, service
from billfold.ledger.deps import Ledger
from billfold.ledger.records import InvalidTransfer
from billfold.ledger.schemas import (
    AccountIn,
    AccountOut,
    AccountsOut,
    TransferFields,
    TransferOut,
    TransferPageOut,
    TransfersIn,
    TransfersOut,
)
from billfold.tenants.scopes import Permission

router = APIRouter(tags=["ledger"])
# Transfers commit in the group commit's transaction, not the request's.
TransferCall = Annotated[Call, authorize(Permission.ADMIN, commits_itself=True)]
AccountIdPath = Annotated[str, Path(min_length=1, max_length=40)]
TransferIdPath = Annotated[str, Path(min_length=1, max_length=120)]
Cursor = Annotated[str | None, Query(max_length=300)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]

REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"description": "`account_not_found` or `pending_transfer_not_found`"},
    409: {
        "description": "`exceeds_credits`, `exceeds_debits`, "
        "`transfer_exists_with_different_fields`, `pending_transfer_already_resolved`, "
        "`pending_transfer_expired` or `post_exceeds_pending`"
    },
    422: {
        "description": "`ledger_units_differ`, `amount_not_positive`, `invalid_transfer` "
        "or `invalid_input`"
    },
}


@router.post(
    "/v1/ledger/accounts",
    operation_id="createLedgerAccount",
    response_model=AccountOut,
    responses={
        409: {"description": "`account_exists_with_different_fields`"},
        422: {"description": "`invalid_account`, `unknown_currency` or `invalid_input`"},
    },
    openapi_extra=json_body_schema(AccountIn),
)
async def create_account(call: AdminCall, request: Request) -> AccountOut:
    """Create the account `code`, or answer it if it exists with the same fields."""
    body = await read_json(request, AccountIn)
    made = await service.create_account(
        call.session, call.ctx, code=body.code, type=body.type, unit=body.unit, rule=body.rule
    )
    return AccountOut.of(made)


@router.get(
    "/v1/ledger/accounts",
    operation_id="listLedgerAccounts",
    response_model=AccountsOut,
)
async def list_accounts(
    call: ReadCall,
    code: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> AccountsOut:
    """The tenant's accounts in id order (`code=` for the one with that code), with
    their balances; cursor-paginated."""
    page = await reading.accounts(call.session, call.ctx, code=code, cursor=cursor, limit=limit)
    return AccountsOut(
        accounts=[AccountOut.of(found) for found in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/v1/ledger/accounts/{account_id}",
    operation_id="getLedgerAccount",
    response_model=AccountOut,
    responses={404: {"description": "`account_not_found`"}},
)
async def get_account(call: ReadCall, account_id: AccountIdPath) -> AccountOut:
    """An account with its four balances."""
    return AccountOut.of(await service.account(call.session, call.ctx, account_id))


@router.get(
    "/v1/ledger/accounts/{account_id}/transfers",
    operation_id="listLedgerAccountTransfers",
    response_model=TransferPageOut,
    responses={404: {"description": "`account_not_found`"}},
)
async def list_account_transfers(
    call: ReadCall, account_id: AccountIdPath, cursor: Cursor = None, limit: Limit = 100
) -> TransferPageOut:
    """The transfers that debit or credit the account, oldest first; cursor-paginated."""
    page = await reading.transfers_of(
        call.session, call.ctx, account_id, cursor=cursor, limit=limit
    )
    return TransferPageOut(
        transfers=[TransferOut.of(found) for found in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/v1/ledger/transfers",
    operation_id="createLedgerTransfers",
    response_model=TransferOut | TransfersOut,
    responses=REFUSALS,
    openapi_extra=json_body_schema(TransfersIn),
)
async def create_transfers(call: TransferCall, request: Request) -> TransferOut | TransfersOut:
    """One transfer (its fields), or a linked batch (`{"transfers": [...]}`: in order, all
    or nothing). A transfer whose id is stored with the same fields is answered as
    stored and changes nothing; with other fields it is refused (409). A refusal names
    the transfer of a batch (`index`, `transfer_id`)."""
    body = await read_json(request, TransfersIn)
    batcher = call.collaborator(Ledger).batcher
    await call.unit.release()  # hold no connection while the group runs: it needs one
    if body.transfers is None:
        if body.id is None:
            raise InvalidTransfer(
                "send a transfer (its `id` and fields) or `transfers`",
                errors=[FieldError("required", pointer="#/id")],
            )
        single = TransferFields.model_validate(
            body.model_dump(exclude_none=True, exclude={"transfers"})
        )
        return TransferOut.of(await batcher.transfer(call.ctx, single.request()))
    others = body.model_fields_set - {"transfers"}
    if others:
        raise InvalidTransfer(
            "a linked batch sends its transfers in `transfers` and nothing beside them",
            errors=[FieldError("not with `transfers`", pointer=f"#/{min(others)}")],
        )
    made = await batcher.transfer_many(call.ctx, [each.request() for each in body.transfers])
    return TransfersOut(transfers=[TransferOut.of(each) for each in made])


@router.get(
    "/v1/ledger/transfers/{transfer_id}",
    operation_id="getLedgerTransfer",
    response_model=TransferOut,
    responses={404: {"description": "`transfer_not_found`"}},
)
async def get_transfer(call: ReadCall, transfer_id: TransferIdPath) -> TransferOut:
    """A transfer as stored."""
    return TransferOut.of(await service.transfer_by_id(call.session, call.ctx, transfer_id))
