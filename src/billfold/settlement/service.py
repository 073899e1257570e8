"""Settlement's rules: split tables (versioned), and settling a succeeded payment in one
linked ledger batch (docs/settlement.md, decision 0044). Every function takes the
caller's session and a `Context` and never commits.

A settlement moves the payment's amount into the clearing account `settlement:{CUR}`
and straight out again, in the same linked batch:

    stl:{id}:in               cash:{CUR}        -> settlement:{CUR}        amount
    stl:{id}:fee              settlement:{CUR}  -> platform_fee:{CUR}      fee
    stl:{id}:payable:{payee}  settlement:{CUR}  -> payable:{payee}:{CUR}   each share
    stl:{id}:revenue          settlement:{CUR}  -> revenue:{CUR}           (self-hosted,
                                                                            platform_subscription)

The clearing account may never be overdrawn (its rule), and a settlement leaves it where
it found it; `billfold ledger verify` checks both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.errors import FieldError
from billfold.kit.invariants import InvariantViolation, invariant
from billfold.kit.money import CURRENCY, MAX_MINOR, minor_units
from billfold.ledger import service as ledger
from billfold.ledger.records import AccountType, AmountNotPositive, BalanceRule, NewTransfer
from billfold.settlement import repository
from billfold.settlement.records import (
    APP_TYPES,
    CLIENT_ID,
    TRANSACTION_TYPES,
    AppIdRequired,
    InvalidSettlement,
    Part,
    Policy,
    Settlement,
    SettlementExistsWithDifferentFields,
    SettlementNotFound,
    SettlementRequest,
    SplitTable,
    SplitTableNotFound,
    shares_as_json,
)
from billfold.settlement.splits import Share, check_shares, fee_of, largest_remainder

MAX_RACE_RETRIES: Final = 3
MAX_TEXT: Final = 255  # a payer's id, a reference
TRANSFER_CODE: Final = "settlement"


async def put_split(
    session: AsyncSession, ctx: Context, app_id: str, shares: Sequence[Share]
) -> tuple[SplitTable, bool]:
    """Make `shares` the app's split table: a new version, unless they are the current
    version's already (then that version, and False: nothing changed)."""
    check_app_id(app_id, pointer=None)
    checked = check_shares(shares)
    for _attempt in range(MAX_RACE_RETRIES):
        found = await repository.current_split(session, ctx.tenant_id, app_id)
        current = SplitTable.of(found) if found is not None else None
        if current is not None and _same_shares(current.shares, checked):
            return current, False
        table = SplitTable(app_id, (current.version if current else 0) + 1, checked, ctx.now)
        row = {
            "tenant_id": ctx.tenant_id,
            "app_id": app_id,
            "version": table.version,
            "shares": shares_as_json(checked),
            "created_at": ctx.now,
        }
        if await repository.insert_split(session, row):
            await eventlog.record(
                session,
                ctx,
                "SplitTableChanged",
                {"app_id": app_id, "version": table.version, "shares": row["shares"]},
            )
            return table, True
        # Another change took this version meanwhile: build on it.
    raise InvariantViolation("a split table change raced past its retries")


async def split(session: AsyncSession, ctx: Context, app_id: str) -> SplitTable:
    found = await repository.current_split(session, ctx.tenant_id, app_id)
    if found is None:
        raise SplitTableNotFound(f"app {app_id!r} has no split table; PUT one first")
    return SplitTable.of(found)


async def split_history(
    session: AsyncSession, ctx: Context, app_id: str, *, before: int | None, limit: int
) -> list[SplitTable]:
    rows = await repository.split_versions(
        session, ctx.tenant_id, app_id, before=before, limit=limit
    )
    if not rows and before is None:
        raise SplitTableNotFound(f"app {app_id!r} has no split table")
    return [SplitTable.of(row) for row in rows]


async def get(session: AsyncSession, ctx: Context, settlement_id: str) -> Settlement:
    found = await repository.settlement(session, ctx.tenant_id, settlement_id)
    if found is None:
        raise SettlementNotFound(f"no settlement {settlement_id!r}")
    return Settlement.of(found)


async def settle(
    session: AsyncSession, ctx: Context, request: SettlementRequest, *, policy: Policy
) -> tuple[Settlement, bool]:
    """Settle a succeeded payment: the one entry point (the API today, the payment
    connector later). Returns the settlement and whether this call made it; the same id
    with the same fields returns the stored settlement, with other fields it is refused
    (`settlement_exists_with_different_fields`)."""
    check_request(request)
    found = await repository.settlement(session, ctx.tenant_id, request.id)
    if found is not None:
        return _replayed(Settlement.of(found), request), False
    table = None
    if policy.mode == "platform" and request.type in APP_TYPES:
        invariant(request.app_id is not None, "an app's transaction names its app")
        table = await split(session, ctx, str(request.app_id))
    made = plan(ctx, request, policy, table)
    if not await repository.insert_settlement(session, made.row(ctx.tenant_id)):
        # A concurrent settle of this id committed first: answer as a retry would.
        found = await repository.settlement(session, ctx.tenant_id, request.id)
        if found is None:
            raise InvariantViolation("a settlement id found taken is there")
        return _replayed(Settlement.of(found), request), False
    await ledger.transfer_many(session, ctx, await _transfers(session, ctx, made))
    await eventlog.record(
        session,
        ctx,
        "SettlementSettled",
        {
            "settlement_id": made.id,
            "type": made.type,
            "amount": made.amount,
            "currency": made.currency,
            "app_id": made.app_id,
            "mode": made.mode,
            "fee_percent": None if made.fee_percent is None else str(made.fee_percent),
            "fee": made.fee,
            "split_version": made.split_version,
            "parts": [part.as_json() for part in made.parts],
            "transfer_ids": list(made.transfer_ids),
        },
    )
    return made, True


def plan(
    ctx: Context, request: SettlementRequest, policy: Policy, table: SplitTable | None
) -> Settlement:
    """Where the amount goes, and the ledger transfer ids that move it (pure). In
    self-hosted mode, and for a platform subscription, all of it is revenue; otherwise
    the fee is taken first and the rest goes to the creator, or is split by the app's
    table for a public app's purchase."""
    amount, currency = request.amount, request.currency
    fee_percent = None
    fee = 0
    split_version = None  # no split table applied
    if policy.mode == "self-hosted" or request.type == "platform_subscription":
        parts = [Part("revenue", f"revenue:{currency}", amount)]
    else:
        if table is None:
            raise InvariantViolation("an app's settlement in platform mode has a split table")
        fee_percent = policy.fee_percent
        split_version = table.version
        fee = fee_of(amount, fee_percent)
        rest = amount - fee
        parts = [Part("fee", f"platform_fee:{currency}", fee)]
        if request.type == "public_app_purchase":
            amounts = largest_remainder(rest, [share.millionths for share in table.shares])
            parts += [
                Part(share.role, payable_code(share.payee, currency), part, share.payee)
                for share, part in zip(table.shares, amounts, strict=True)
            ]
        else:
            creator = table.creator
            parts.append(
                Part("creator", payable_code(creator.payee, currency), rest, creator.payee)
            )
    parts = [part for part in parts if part.amount > 0]  # a zero moves nothing
    invariant(sum(part.amount for part in parts) == amount, "a settlement's parts are its amount")
    return Settlement(
        id=request.id,
        type=request.type,
        amount=amount,
        currency=currency,
        app_id=request.app_id,
        payer=request.payer,
        reference=request.reference,
        mode=policy.mode,
        fee_percent=fee_percent,
        fee=fee,
        split_version=split_version,
        parts=tuple(parts),
        transfer_ids=(f"stl:{request.id}:in", *(_transfer_id(request.id, p) for p in parts)),
        created_at=ctx.now,
    )


def payable_code(payee: str, currency: str) -> str:
    return f"payable:{payee}:{currency}"


def _transfer_id(settlement_id: str, part: Part) -> str:
    if part.payee is not None:
        return f"stl:{settlement_id}:payable:{part.payee}"
    return f"stl:{settlement_id}:{part.role}"


# (type, rule) of each account a settlement touches, by the code's first part.
_ACCOUNTS: Final[dict[str, tuple[AccountType, BalanceRule | None]]] = {
    "cash": ("asset", None),
    "settlement": ("liability", "debits_must_not_exceed_credits"),
    "platform_fee": ("revenue", None),
    "revenue": ("revenue", None),
    "payable": ("liability", "debits_must_not_exceed_credits"),
}


async def account_id(session: AsyncSession, ctx: Context, code: str, unit: str) -> str:
    """The id of the shared chart's account `code` (docs/settlement.md), made if new."""
    type, rule = _ACCOUNTS[code.split(":", 1)[0]]
    found = await ledger.create_account(session, ctx, code=code, type=type, unit=unit, rule=rule)
    return found.id


async def _transfers(session: AsyncSession, ctx: Context, made: Settlement) -> list[NewTransfer]:
    unit = made.currency
    cash = await account_id(session, ctx, f"cash:{unit}", unit)
    clearing = await account_id(session, ctx, f"settlement:{unit}", unit)
    metadata = {"settlement_id": made.id, "type": made.type}
    transfers = [
        NewTransfer(
            made.transfer_ids[0], cash, clearing, made.amount, TRANSFER_CODE, metadata=metadata
        )
    ]
    for transfer_id, part in zip(made.transfer_ids[1:], made.parts, strict=True):
        credit = await account_id(session, ctx, part.account, unit)
        transfers.append(
            NewTransfer(
                transfer_id, clearing, credit, part.amount, TRANSFER_CODE, metadata=metadata
            )
        )
    return transfers


def _replayed(stored: Settlement, request: SettlementRequest) -> Settlement:
    differences = [
        name
        for name in ("type", "amount", "currency", "app_id", "payer", "reference")
        if getattr(stored, name) != getattr(request, name)
    ]
    if differences:
        raise SettlementExistsWithDifferentFields(
            f"settlement {request.id!r} exists with other {', '.join(differences)}",
            extra={"fields": differences},
        )
    return stored


def _same_shares(one: Sequence[Share], other: Sequence[Share]) -> bool:
    def key(shares: Sequence[Share]) -> list[tuple[str, str, int]]:
        return [(share.payee, share.role, share.millionths) for share in shares]

    return key(one) == key(other)


def check_app_id(app_id: str, *, pointer: str | None = "#/app_id") -> None:
    """A body's `app_id` (at `pointer`), or the path's (pointer None)."""
    if not CLIENT_ID.match(app_id):
        raise InvalidSettlement(
            "an app id is 1 to 48 letters, digits and _ . - (starting with a letter or digit)",
            errors=[
                FieldError(
                    "not an app id", pointer=pointer, parameter=None if pointer else "app_id"
                )
            ],
        )


def check_request(request: SettlementRequest) -> None:
    """What can be said of a request before reading anything."""
    if not CLIENT_ID.match(request.id):
        raise InvalidSettlement(
            "a settlement id is 1 to 48 letters, digits and _ . - (starting with a letter or "
            "digit)",
            errors=[FieldError("not a settlement id", pointer="#/id")],
        )
    if request.type not in TRANSACTION_TYPES:
        raise InvalidSettlement(
            f"a settlement's type is one of {', '.join(TRANSACTION_TYPES)}",
            errors=[FieldError("unknown type", pointer="#/type")],
        )
    if isinstance(request.amount, bool) or not isinstance(request.amount, int):
        raise AmountNotPositive(
            "an amount is a whole number of minor units",
            errors=[FieldError("not an integer", pointer="#/amount")],
        )
    if not 0 < request.amount <= MAX_MINOR:
        raise AmountNotPositive(
            f"an amount is a positive number of minor units (at most {MAX_MINOR}), not "
            f"{request.amount}",
            errors=[FieldError("not positive", pointer="#/amount")],
        )
    if not CURRENCY.match(request.currency):
        raise InvalidSettlement(
            "a currency is an ISO 4217 code such as USD",
            errors=[FieldError("not a currency", pointer="#/currency")],
        )
    minor_units(request.currency)  # unknown_currency for a code ISO does not list
    if request.app_id is not None:
        check_app_id(request.app_id)
    elif request.type in APP_TYPES:
        raise AppIdRequired(
            f"a {request.type} settles an app's sale: name the app (app_id)",
            errors=[FieldError("required for this type", pointer="#/app_id")],
        )
    for name in ("payer", "reference"):
        value = getattr(request, name)
        if value is not None and not 1 <= len(value) <= MAX_TEXT:
            raise InvalidSettlement(
                f"{name} is 1 to {MAX_TEXT} characters",
                errors=[FieldError(f"1 to {MAX_TEXT} characters", pointer=f"#/{name}")],
            )
