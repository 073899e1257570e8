"""Holds: reserve part of a wallet for a long-running workflow, then settle it to the
actual amount, release it, or let it time out (docs/wallets.md, "Holds").

A hold is one pending ledger transfer per lot it reserves from (in consumption order),
ids `whd:{hold_id}:{n}`, with the hold's timeout. Settling posts them (for the actual
amount, lots in order; the rest is released), releasing voids them, and a timeout is
released by the ledger's `expire` (the expiry job). The client's `hold_id` is the
idempotency key of the hold, and a settle or release is answered again when retried."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.errors import FieldError
from billfold.kit.ids import new_id
from billfold.ledger import service as ledger
from billfold.ledger.records import NewTransfer
from billfold.wallets import accounts, repository
from billfold.wallets import service as wallets
from billfold.wallets.records import (
    DEFAULT_HOLD_TIMEOUT_S,
    MAX_HOLD_TIMEOUT_S,
    MAX_LEGS,
    Hold,
    HoldAlreadyResolved,
    HoldExistsWithDifferentFields,
    HoldExpired,
    HoldNotFound,
    InvalidWalletRequest,
    Leg,
    Wallet,
)

EXPIRY_SUFFIX: Final = "~expired"  # the ledger's id for a pending transfer it expired


async def create_hold(
    session: AsyncSession,
    ctx: Context,
    *,
    customer_id: str,
    unit: str,
    amount: int,
    hold_id: str,
    timeout_s: int = DEFAULT_HOLD_TIMEOUT_S,
    to_account: str | None = None,
) -> Hold:
    """Reserve `amount` of the wallet for `timeout_s` seconds, from its lots in order,
    bound for `to_account` (default `usage_revenue:{unit}`). More than the available
    balance: `InsufficientBalance` (402). The same `hold_id` again returns the hold;
    with other fields, `hold_exists_with_different_fields` (409)."""
    wallets.check_unit(unit)
    wallets.check_amount(amount)
    wallets.check_reference(hold_id, pointer="#/hold_id")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int):
        raise InvalidWalletRequest(
            "a timeout is a whole number of seconds",
            errors=[FieldError("not an integer", pointer="#/timeout_s")],
        )
    if not 0 < timeout_s <= MAX_HOLD_TIMEOUT_S:
        raise InvalidWalletRequest(
            f"a hold's timeout is 1 to {MAX_HOLD_TIMEOUT_S} seconds",
            errors=[FieldError("out of range", pointer="#/timeout_s")],
        )
    target = to_account or f"usage_revenue:{unit}"
    found = await wallets.find_wallet(session, ctx, customer_id, unit, lock=True)
    if found is None:
        raise wallets.insufficient(unit, 0, amount)
    stored = await repository.hold_by_client_id(session, ctx.tenant_id, hold_id)
    if stored is not None:
        hold = Hold.of(stored, unit)
        differences = [
            name
            for name, same in (
                ("wallet", hold.wallet_id == found.id),
                ("amount", hold.amount == amount),
                ("timeout_s", hold.timeout_s == timeout_s),
                ("to_account", hold.to_account == target),
            )
            if not same
        ]
        if differences:
            raise HoldExistsWithDifferentFields(
                f"hold {hold_id!r} exists with other {', '.join(differences)}",
                extra={"fields": differences},
            )
        return hold
    lots = await repository.drawable_lots(session, found.id, ctx.now, MAX_LEGS)
    legs = wallets.draw(lots, amount, prefix=f"whd:{hold_id}")
    if sum(leg.amount for leg in legs) < amount:
        posted, held = await repository.totals(session, found.id, ctx.now)
        raise wallets.insufficient(unit, posted - held, amount)
    destination = await accounts.chart_account(session, ctx, target, unit)
    account_of = {lot.id: lot.account_id for lot in lots}
    await ledger.transfer_many(
        session,
        ctx,
        [
            NewTransfer(
                leg.transfer_id,
                account_of[leg.lot_id],
                destination.id,
                leg.amount,
                code="wallet_hold",
                pending=True,
                timeout_s=timeout_s,
                metadata={"wallet_id": found.id, "lot_id": leg.lot_id, "hold_id": hold_id},
            )
            for leg in legs
        ],
    )
    row = {
        "id": new_id("whl"),
        "tenant_id": ctx.tenant_id,
        "wallet_id": found.id,
        "hold_id": hold_id,
        "amount": amount,
        "to_account": target,
        "timeout_s": timeout_s,
        "expires_at": ctx.now + timedelta(seconds=timeout_s),
        "status": "held",
        "legs": [leg.as_dict() for leg in legs],
        "settled_amount": None,
        "resolution": None,
        "created_at": ctx.now,
        "resolved_at": None,
    }
    await repository.insert_hold(session, row)
    hold = await _hold(session, ctx, hold_id, unit)
    await eventlog.record(
        session,
        ctx,
        "WalletHoldCreated",
        {
            "wallet_id": found.id,
            "hold_id": hold_id,
            "unit": unit,
            "amount": amount,
            "to_account": target,
            "expires_at": hold.expires_at.isoformat(),
            "lots": [leg.as_dict() for leg in legs],
            "transfer_ids": hold.transfer_ids,
        },
        customer_id=found.customer_id,
    )
    await wallets.after_change(session, ctx, found, customer_id)
    return hold


async def settle_hold(session: AsyncSession, ctx: Context, *, hold_id: str, amount: int) -> Hold:
    """Settle the hold to the actual `amount` (0 or more). Up to the hold: its legs are
    posted in order for `amount` in all, the rest released. Past the hold: every leg is
    posted in full and the excess drawn from the wallet's available balance in the same
    linked batch, or `InsufficientBalance` (402) and the hold stays as it was. Settled
    again for the same amount: the same answer; otherwise `hold_already_resolved`."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise InvalidWalletRequest(
            "a settled amount is a whole number of minor units, 0 or more",
            errors=[FieldError("not a non-negative integer", pointer="#/amount")],
        )
    hold, found = await _locked(session, ctx, hold_id)
    if hold.status == "settled" and hold.settled_amount == amount:
        return hold
    _check_open(hold, ctx)
    requests: list[NewTransfer] = []
    left = amount
    for leg in hold.legs:
        take = min(left, leg.amount)
        left -= take
        if take > 0:
            requests.append(
                NewTransfer(f"{leg.transfer_id}:post", post_pending_id=leg.transfer_id, amount=take)
            )
        else:
            requests.append(NewTransfer(f"{leg.transfer_id}:void", void_pending_id=leg.transfer_id))
    excess: list[Leg] = []
    if left > 0:
        lots = await repository.drawable_lots(session, found.id, ctx.now, MAX_LEGS)
        excess = wallets.draw(lots, left, prefix=f"whd:{hold_id}:x")
        if sum(leg.amount for leg in excess) < left:
            posted, held = await repository.totals(session, found.id, ctx.now)
            raise wallets.insufficient(found.unit, posted - held, left)
        destination = await accounts.chart_account(session, ctx, hold.to_account, found.unit)
        account_of = {lot.id: lot.account_id for lot in lots}
        requests += [
            NewTransfer(
                leg.transfer_id,
                account_of[leg.lot_id],
                destination.id,
                leg.amount,
                code="wallet_hold_excess",
                metadata={"wallet_id": found.id, "lot_id": leg.lot_id, "hold_id": hold_id},
            )
            for leg in excess
        ]
    made = await ledger.transfer_many(session, ctx, requests)
    transfer_ids = [each.id for each in made]
    await repository.resolve_hold(
        session,
        hold.id,
        status="settled",
        settled_amount=amount,
        resolution={"transfer_ids": transfer_ids, "excess": [leg.as_dict() for leg in excess]},
        now=ctx.now,
    )
    await eventlog.record(
        session,
        ctx,
        "WalletHoldSettled",
        {
            "wallet_id": found.id,
            "hold_id": hold_id,
            "unit": found.unit,
            "held": hold.amount,
            "amount": amount,
            "to_account": hold.to_account,
            "transfer_ids": transfer_ids,
        },
        customer_id=found.customer_id,
    )
    await wallets.after_change(session, ctx, found, await _external_id(session, ctx, found))
    return await _hold(session, ctx, hold_id, found.unit)


async def release_hold(session: AsyncSession, ctx: Context, *, hold_id: str) -> Hold:
    """Release the whole hold (the workflow failed). Released again, or already timed
    out: the hold as it is. Settled: `hold_already_resolved` (409)."""
    hold, found = await _locked(session, ctx, hold_id)
    if hold.status in ("released", "expired"):
        return hold
    if hold.status == "held" and ctx.now >= hold.expires_at:
        # Timed out: only the ledger's expiry can release its legs now.
        await ledger.expire(session, ctx)
        await expire_timed_out(session, ctx, found, hold)
        return await _hold(session, ctx, hold_id, found.unit)
    _check_open(hold, ctx)
    made = await ledger.transfer_many(
        session,
        ctx,
        [
            NewTransfer(f"{leg.transfer_id}:void", void_pending_id=leg.transfer_id)
            for leg in hold.legs
        ],
    )
    transfer_ids = [each.id for each in made]
    await repository.resolve_hold(
        session,
        hold.id,
        status="released",
        settled_amount=None,
        resolution={"transfer_ids": transfer_ids},
        now=ctx.now,
    )
    await eventlog.record(
        session,
        ctx,
        "WalletHoldReleased",
        {
            "wallet_id": found.id,
            "hold_id": hold_id,
            "unit": found.unit,
            "amount": hold.amount,
            "transfer_ids": transfer_ids,
        },
        customer_id=found.customer_id,
    )
    await wallets.after_change(session, ctx, found, await _external_id(session, ctx, found))
    return await _hold(session, ctx, hold_id, found.unit)


async def get_hold(session: AsyncSession, ctx: Context, hold_id: str) -> Hold:
    stored = await repository.hold_by_client_id(session, ctx.tenant_id, hold_id)
    if stored is None:
        raise HoldNotFound(f"no hold {hold_id!r}")
    found = await wallets.wallet(session, ctx, stored.wallet_id)
    return Hold.of(stored, found.unit)


async def expire_timed_out(session: AsyncSession, ctx: Context, found: Wallet, hold: Hold) -> bool:
    """Mark a timed-out hold expired once the ledger has expired every one of its legs
    (the caller holds the wallet's lock); whether it did."""
    expiries = [f"{leg.transfer_id}{EXPIRY_SUFFIX}" for leg in hold.legs]
    done = await repository.transfer_ids_stored(session, ctx.tenant_id, expiries)
    if len(done) != len(expiries):
        return False
    await repository.resolve_hold(
        session,
        hold.id,
        status="expired",
        settled_amount=None,
        resolution={"transfer_ids": expiries},
        now=ctx.now,
    )
    await eventlog.record(
        session,
        ctx,
        "WalletHoldExpired",
        {
            "wallet_id": found.id,
            "hold_id": hold.hold_id,
            "unit": found.unit,
            "amount": hold.amount,
            "transfer_ids": expiries,
        },
        customer_id=found.customer_id,
    )
    await wallets.after_change(session, ctx, found, await _external_id(session, ctx, found))
    return True


async def _locked(session: AsyncSession, ctx: Context, hold_id: str) -> tuple[Hold, Wallet]:
    """The hold, read again under its wallet's lock."""
    wallets.check_reference(hold_id, pointer="#/hold_id")
    stored = await repository.hold_by_client_id(session, ctx.tenant_id, hold_id)
    if stored is None:
        raise HoldNotFound(f"no hold {hold_id!r}")
    found = await wallets.wallet(session, ctx, stored.wallet_id, lock=True)
    return await _hold(session, ctx, hold_id, found.unit), found


async def _hold(session: AsyncSession, ctx: Context, hold_id: str, unit: str) -> Hold:
    stored = await repository.hold_by_client_id(session, ctx.tenant_id, hold_id)
    if stored is None:
        raise HoldNotFound(f"no hold {hold_id!r}")
    return Hold.of(stored, unit)


def _check_open(hold: Hold, ctx: Context) -> None:
    if hold.status != "held":
        raise HoldAlreadyResolved(
            f"hold {hold.hold_id!r} is already {hold.status}", extra={"status": hold.status}
        )
    if ctx.now >= hold.expires_at:
        raise HoldExpired(
            f"hold {hold.hold_id!r} timed out at {hold.expires_at.isoformat()}; the expiry "
            "job releases it"
        )


async def _external_id(session: AsyncSession, ctx: Context, found: Wallet) -> str:
    return await wallets.customer_external_id(session, ctx, found)
