"""Wallets: credit a lot, spend from the lots in order, read the balance.

A wallet is one row per (tenant, customer, unit); its money is in its lots' ledger
accounts (`wallet:{lot_id}`, which cannot be overdrawn). Every writer of a wallet first
locks the wallet's row, so lots are drawn in the documented order and a threshold is
crossed once; the ledger's `debits_must_not_exceed_credits` rule is the backstop that
no lot is ever overdrawn. `customer_id` is the customer's own id (the product's,
`external_id`), as every route takes it. Nothing here commits (docs/wallets.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers import service as customers
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.errors import FieldError
from billfold.kit.ids import new_id
from billfold.kit.invariants import InvariantViolation, invariant
from billfold.kit.money import CURRENCY, MAX_MINOR, UnknownCurrency, minor_units
from billfold.ledger import service as ledger
from billfold.ledger.records import AmountNotPositive, NewTransfer
from billfold.ledger.service import CREDIT_UNIT
from billfold.wallets import accounts, repository
from billfold.wallets.records import (
    DEFAULT_PRIORITY,
    MAX_LEGS,
    MAX_PRIORITY,
    REFERENCE,
    SOURCES,
    Alert,
    InsufficientBalance,
    InvalidWalletRequest,
    Leg,
    Lot,
    LotExistsWithDifferentFields,
    LotNotFound,
    Movement,
    SpendExistsWithDifferentFields,
    Spent,
    Wallet,
    WalletBalance,
    WalletNotFound,
)


class UnknownUnit(InvalidWalletRequest):
    code = "unknown_unit"
    title = "Not an ISO 4217 currency or a credit unit"


# --- what can be said of a request before reading anything -------------------------------


def check_unit(unit: str, *, pointer: str = "#/unit") -> str:
    """An ISO 4217 currency (with minor units) or a credit unit (`credits`)."""
    if isinstance(unit, str) and CURRENCY.match(unit):
        try:
            minor_units(unit, pointer=pointer)
        except UnknownCurrency as error:
            raise UnknownUnit(error.detail, errors=error.errors) from error
        return unit
    if isinstance(unit, str) and CREDIT_UNIT.match(unit):
        return unit
    raise UnknownUnit(
        f"{unit!r} is neither an ISO 4217 currency (USD) nor a credit unit (credits: "
        "lowercase letters, digits and _)",
        errors=[FieldError("not a unit", pointer=pointer)],
    )


def check_amount(amount: int, *, pointer: str = "#/amount") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise AmountNotPositive(
            "an amount is a whole number of minor units",
            errors=[FieldError("not an integer", pointer=pointer)],
        )
    if amount <= 0:
        raise AmountNotPositive(
            f"an amount must be positive, not {amount}",
            errors=[FieldError("not positive", pointer=pointer)],
        )
    if amount > MAX_MINOR:
        raise InvalidWalletRequest(
            "an amount fits in 63 bits", errors=[FieldError("too large", pointer=pointer)]
        )
    return amount


def check_reference(reference: str, *, pointer: str = "#/reference") -> str:
    if not isinstance(reference, str) or not REFERENCE.match(reference):
        raise InvalidWalletRequest(
            "a reference is 1 to 80 letters, digits and _ . : - (starting with a letter or digit)",
            errors=[FieldError("not a reference", pointer=pointer)],
        )
    return reference


def check_priority(priority: int, *, pointer: str = "#/priority") -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidWalletRequest(
            "a priority is a whole number", errors=[FieldError("not an integer", pointer=pointer)]
        )
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidWalletRequest(
            f"a priority is 0 to {MAX_PRIORITY} (lower is drawn first)",
            errors=[FieldError("out of range", pointer=pointer)],
        )
    return priority


# --- wallets ----------------------------------------------------------------------------------


async def open_wallet(session: AsyncSession, ctx: Context, customer_id: str, unit: str) -> Wallet:
    """The customer's wallet in `unit`, created if new (and the customer with it),
    locked until the transaction ends."""
    customer = await customers.ensure(session, ctx, customer_id)
    await repository.insert_wallet(
        session,
        {
            "id": new_id("wal"),
            "tenant_id": ctx.tenant_id,
            "customer_id": customer.id,
            "unit": unit,
            "low_balance": None,
            "alert": "exhausted",  # nothing in it yet: the first credit re-arms it
            "created_at": ctx.now,
            "updated_at": ctx.now,
        },
    )
    row = await repository.wallet_of(session, ctx.tenant_id, customer.id, unit, lock=True)
    if row is None:
        raise InvariantViolation("a wallet just inserted or found is there")
    return Wallet.of(row)


async def find_wallet(
    session: AsyncSession, ctx: Context, customer_id: str, unit: str, *, lock: bool
) -> Wallet | None:
    """The customer's wallet in `unit`, if the customer and the wallet exist."""
    customers.check_external_id(customer_id, pointer="#/customer_id")
    customer = await customers.find(session, ctx.tenant_id, customer_id)
    if customer is None:
        return None
    row = await repository.wallet_of(session, ctx.tenant_id, customer.id, unit, lock=lock)
    return None if row is None else Wallet.of(row)


async def wallet(
    session: AsyncSession, ctx: Context, wallet_id: str, *, lock: bool = False
) -> Wallet:
    row = await repository.wallet_by_id(session, ctx.tenant_id, wallet_id, lock=lock)
    if row is None:
        raise WalletNotFound(f"no wallet {wallet_id!r}")
    return Wallet.of(row)


async def wallets_of(session: AsyncSession, ctx: Context, customer_id: str) -> list[WalletBalance]:
    """Every wallet of the customer, with its balance, by unit."""
    customer = await customers.get(session, ctx.tenant_id, customer_id)
    rows = await repository.wallets_of_customer(session, ctx.tenant_id, customer.id)
    return [await _balance_of(session, ctx, Wallet.of(row), customer_id) for row in rows]


async def balance(
    session: AsyncSession, ctx: Context, customer_id: str, unit: str
) -> WalletBalance:
    """The wallet's posted, held and available balance now; all zero for a customer or
    wallet that does not exist yet."""
    check_unit(unit)
    found = await find_wallet(session, ctx, customer_id, unit, lock=False)
    if found is None:
        return WalletBalance(None, customer_id, unit, 0, 0, 0, None)
    return await _balance_of(session, ctx, found, customer_id)


async def _balance_of(
    session: AsyncSession, ctx: Context, found: Wallet, customer_id: str
) -> WalletBalance:
    posted, held = await repository.totals(session, found.id, ctx.now)
    return WalletBalance(
        found.id, customer_id, found.unit, posted, held, posted - held, found.low_balance
    )


async def set_low_balance(
    session: AsyncSession, ctx: Context, *, customer_id: str, unit: str, low_balance: int | None
) -> WalletBalance:
    """Set (or clear, with None) the wallet's low-balance threshold. The alert state is
    worked out again at once, so a threshold set above the balance fires now."""
    check_unit(unit)
    if low_balance is not None:
        check_amount(low_balance, pointer="#/low_balance")
    found = await open_wallet(session, ctx, customer_id, unit)
    await repository.set_alert(session, found.id, found.alert, low_balance, ctx.now)
    eventlog_data = {"wallet_id": found.id, "unit": unit, "low_balance": low_balance}
    await eventlog.record(
        session, ctx, "WalletUpdated", eventlog_data, customer_id=found.customer_id
    )
    changed = Wallet(**{**vars(found), "low_balance": low_balance})
    return await after_change(session, ctx, changed, customer_id)


# --- credit -----------------------------------------------------------------------------------


def default_funding(source: str, unit: str) -> str:
    """The account a credit of `source` debits unless the caller names one: a payment
    brings cash in (in a currency), a credit note or refund gives revenue back, anything
    else (grant, claim, promotion, a payment in a credit unit) is funded by
    `wallet_funding:{unit}`."""
    if source == "payment" and CURRENCY.match(unit):
        return f"cash:{unit}"
    if source in ("credit_note", "refund") and CURRENCY.match(unit):
        return f"revenue:{unit}"
    return f"wallet_funding:{unit}"


async def credit(
    session: AsyncSession,
    ctx: Context,
    *,
    customer_id: str,
    unit: str,
    amount: int,
    source: str,
    reference: str,
    expires_at: datetime | None = None,
    priority: int = DEFAULT_PRIORITY,
    funded_by: str | None = None,
) -> Lot:
    """Add a lot to the customer's wallet in `unit`: one ledger transfer from `funded_by`
    (by default as `default_funding` says) to the lot's own account. Idempotent by
    (tenant, source, reference): the same call again returns the same lot; other fields
    are `credit_exists_with_different_fields` (409)."""
    check_unit(unit)
    check_amount(amount)
    check_reference(reference)
    check_priority(priority)
    if source not in SOURCES:
        raise InvalidWalletRequest(
            f"a credit's source is one of {', '.join(SOURCES)}",
            errors=[FieldError("unknown source", pointer="#/source")],
        )
    funding = funded_by or default_funding(source, unit)
    found = await open_wallet(session, ctx, customer_id, unit)
    existing = await repository.lot_by_reference(session, ctx.tenant_id, source, reference)
    if existing is not None:
        return _replayed_lot(Lot.of(existing, unit), found, amount, expires_at, priority, funding)
    if expires_at is not None and expires_at <= ctx.now:
        raise InvalidWalletRequest(
            f"a credit's expiry ({expires_at.isoformat()}) is in the future",
            errors=[FieldError("not in the future", pointer="#/expires_at")],
        )
    lot_id = new_id("lot")
    transfer_id = f"wcr:{lot_id}"
    funding_account = await accounts.chart_account(session, ctx, funding, unit)
    lot_account = await accounts.lot_account(session, ctx, lot_id, unit)
    row = {
        "id": lot_id,
        "tenant_id": ctx.tenant_id,
        "wallet_id": found.id,
        "account_id": lot_account.id,
        "source": source,
        "reference": reference,
        "amount": amount,
        "priority": priority,
        "expires_at": expires_at,
        "funded_by": funding,
        "transfer_id": transfer_id,
        "created_at": ctx.now,
    }
    if not await repository.insert_lot(session, row):
        # Another wallet's credit took this (source, reference) meanwhile.
        raced = await repository.lot_by_reference(session, ctx.tenant_id, source, reference)
        invariant(raced is not None, "a lot whose reference is taken is there")
        assert raced is not None
        return _replayed_lot(Lot.of(raced, unit), found, amount, expires_at, priority, funding)
    made = await ledger.transfer(
        session,
        ctx,
        NewTransfer(
            transfer_id,
            funding_account.id,
            lot_account.id,
            amount,
            code=f"wallet_credit:{source}",
            metadata={"wallet_id": found.id, "lot_id": lot_id, "reference": reference},
        ),
    )
    lot = Lot.of(row, unit)
    await eventlog.record(
        session,
        ctx,
        "WalletCredited",
        {
            "wallet_id": found.id,
            "lot_id": lot_id,
            "unit": unit,
            "amount": amount,
            "source": source,
            "reference": reference,
            "priority": priority,
            "expires_at": None if expires_at is None else expires_at.isoformat(),
            "funded_by": funding,
            "transfer_ids": [made.id],
        },
        customer_id=found.customer_id,
    )
    await after_change(session, ctx, found, customer_id)
    return lot


def _replayed_lot(
    lot: Lot,
    found: Wallet,
    amount: int,
    expires_at: datetime | None,
    priority: int,
    funding: str,
) -> Lot:
    differences = [
        name
        for name, same in (
            ("wallet", lot.wallet_id == found.id),
            ("amount", lot.amount == amount),
            ("expires_at", lot.expires_at == expires_at),
            ("priority", lot.priority == priority),
            ("funded_by", lot.funded_by == funding),
        )
        if not same
    ]
    if differences:
        raise LotExistsWithDifferentFields(
            f"a credit from {lot.source} {lot.reference!r} exists with other "
            f"{', '.join(differences)}",
            extra={"lot_id": lot.id, "fields": differences},
        )
    return lot


# --- spend ------------------------------------------------------------------------------------


def insufficient(unit: str, available: int, amount: int) -> InsufficientBalance:
    shortfall = amount - max(available, 0)
    return InsufficientBalance(
        f"the wallet has {available} {unit} available, {shortfall} short of {amount}",
        extra={"unit": unit, "balance": available, "available": available, "shortfall": shortfall},
    )


async def spend(
    session: AsyncSession,
    ctx: Context,
    *,
    customer_id: str,
    unit: str,
    amount: int,
    reference: str,
    to_account: str | None = None,
    allow_partial: bool = False,
) -> Spent:
    """Draw `amount` from the wallet's lots in consumption order, in one linked ledger
    batch to `to_account` (default `usage_revenue:{unit}`). The transfers' ids are
    `wsp:{reference}:{n}`: a retry of the reference returns the stored `Spent` with no
    second effect; other fields are `spend_exists_with_different_fields` (409). Short of
    `amount`: `InsufficientBalance` (402), or with `allow_partial` whatever there is
    (possibly nothing)."""
    check_unit(unit)
    check_amount(amount)
    check_reference(reference)
    target = to_account or f"usage_revenue:{unit}"
    found = await find_wallet(session, ctx, customer_id, unit, lock=True)
    if found is None:
        if not allow_partial:
            raise insufficient(unit, 0, amount)
        return Spent(reference, None, unit, amount, 0, (), 0, ctx.now)
    stored = await repository.spend_by_reference(session, ctx.tenant_id, reference)
    if stored is not None:
        return _replayed_spend(stored, found, amount, target, allow_partial)
    lots = await repository.drawable_lots(session, found.id, ctx.now, MAX_LEGS)
    legs = draw(lots, amount, prefix=f"wsp:{reference}")
    drawn = sum(leg.amount for leg in legs)
    if drawn < amount and not allow_partial:
        posted, held = await repository.totals(session, found.id, ctx.now)
        raise insufficient(unit, posted - held, amount)
    if legs:
        destination = await accounts.chart_account(session, ctx, target, unit)
        await ledger.transfer_many(
            session,
            ctx,
            [
                NewTransfer(
                    leg.transfer_id,
                    _account_of(lots, leg.lot_id),
                    destination.id,
                    leg.amount,
                    code="wallet_spend",
                    metadata={"wallet_id": found.id, "lot_id": leg.lot_id, "reference": reference},
                )
                for leg in legs
            ],
        )
    posted, held = await repository.totals(session, found.id, ctx.now)
    spent = Spent(reference, found.id, unit, amount, drawn, tuple(legs), posted - held, ctx.now)
    await repository.insert_spend(
        session,
        {
            "id": new_id("wsp"),
            "tenant_id": ctx.tenant_id,
            "wallet_id": found.id,
            "reference": reference,
            "requested": amount,
            "drawn": drawn,
            "to_account": target,
            "allow_partial": int(allow_partial),
            "legs": [leg.as_dict() for leg in legs],
            "balance_after": spent.balance_after,
            "created_at": ctx.now,
        },
    )
    await eventlog.record(
        session,
        ctx,
        "WalletSpent",
        {
            "wallet_id": found.id,
            "unit": unit,
            "reference": reference,
            "requested": amount,
            "amount": drawn,
            "to_account": target,
            "lots": [leg.as_dict() for leg in legs],
            "transfer_ids": spent.transfer_ids,
            "balance_after": spent.balance_after,
        },
        customer_id=found.customer_id,
    )
    await after_change(session, ctx, found, customer_id)
    return spent


def draw(lots: Sequence[Any], amount: int, *, prefix: str) -> list[Leg]:
    """Take `amount` from `lots` (in consumption order, each with its `remaining`), each
    lot as far as it goes; the legs are named `{prefix}:{n}`."""
    legs: list[Leg] = []
    left = amount
    for lot in lots:
        if left == 0:
            break
        take = min(left, int(lot.remaining))
        if take > 0:
            legs.append(Leg(lot.id, f"{prefix}:{len(legs)}", take))
            left -= take
    return legs


def _account_of(lots: Sequence[Any], lot_id: str) -> str:
    return str(next(lot.account_id for lot in lots if lot.id == lot_id))


def _replayed_spend(
    stored: Any, found: Wallet, amount: int, target: str, allow_partial: bool
) -> Spent:
    differences = [
        name
        for name, same in (
            ("wallet", stored.wallet_id == found.id),
            ("amount", int(stored.requested) == amount),
            ("to_account", stored.to_account == target),
            ("allow_partial", bool(stored.allow_partial) == allow_partial),
        )
        if not same
    ]
    if differences:
        raise SpendExistsWithDifferentFields(
            f"spend {stored.reference!r} exists with other {', '.join(differences)}",
            extra={"fields": differences},
        )
    return Spent(
        stored.reference,
        stored.wallet_id,
        found.unit,
        int(stored.requested),
        int(stored.drawn),
        tuple(Leg.of(leg) for leg in stored.legs),
        int(stored.balance_after),
        stored.created_at,
    )


# --- thresholds -------------------------------------------------------------------------------

_RANK: dict[Alert, int] = {"ok": 0, "low": 1, "exhausted": 2}


def alert_for(available: int, low_balance: int | None) -> Alert:
    if available <= 0:
        return "exhausted"
    if low_balance is not None and available < low_balance:
        return "low"
    return "ok"


async def after_change(
    session: AsyncSession, ctx: Context, found: Wallet, customer_id: str
) -> WalletBalance:
    """Work the wallet's alert out again (the caller holds its lock) and record each
    threshold crossed on the way down, once: `WalletBalanceLow` when the available
    balance falls below `low_balance`, `WalletExhausted` when it reaches zero. Going back
    up re-arms them without an entry."""
    now = await _balance_of(session, ctx, found, customer_id)
    alert = alert_for(now.available, found.low_balance)
    if alert == found.alert:
        return now
    before, after = _RANK[found.alert], _RANK[alert]
    data = {
        "wallet_id": found.id,
        "unit": found.unit,
        "available": now.available,
        "low_balance": found.low_balance,
    }
    if before < 1 <= after and found.low_balance is not None:
        await eventlog.record(session, ctx, "WalletBalanceLow", data, customer_id=found.customer_id)
    if before < 2 <= after:
        await eventlog.record(session, ctx, "WalletExhausted", data, customer_id=found.customer_id)
    await repository.set_alert(session, found.id, alert, found.low_balance, ctx.now)
    return now


async def customer_external_id(session: AsyncSession, ctx: Context, found: Wallet) -> str:
    """The product's id of the wallet's customer."""
    return await customers.external_id_of(session, ctx.tenant_id, found.customer_id)


async def transactions(
    session: AsyncSession,
    ctx: Context,
    wallet_id: str,
    *,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[Movement]:
    """The wallet's history from its lots' ledger transfers, newest first, each with its
    `direction` (`in`: credited to a lot; `out`: debited from one) and its ledger `kind`:
    `posted` moves money, `pending` reserves it (a hold), and a `post`, `void` or
    `expire` resolves that reservation (taking `amount`, or releasing it)."""
    await wallet(session, ctx, wallet_id)
    rows = await repository.transactions(
        session, ctx.tenant_id, wallet_id, before=before, limit=limit
    )
    return [
        Movement(
            transfer_id=row.id,
            lot_id=row.lot_id,
            kind=row.kind,
            code=row.code,
            direction="out" if row.outgoing else "in",
            amount=int(row.amount),
            pending_id=row.pending_id,
            created_at=row.created_at,
        )
        for row in rows
    ]


async def lot(session: AsyncSession, ctx: Context, lot_id: str) -> Lot:
    """A lot by its id, in the tenant."""
    row = await repository.lot_by_id(session, ctx.tenant_id, lot_id)
    if row is None:
        raise LotNotFound(f"no wallet lot {lot_id!r}")
    found = await wallet(session, ctx, row.wallet_id)
    return Lot.of(row, found.unit)
