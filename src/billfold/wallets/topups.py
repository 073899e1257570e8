"""Top-ups: credit a wallet from an admin grant or a promotion (at once), or from a
payment (pending until the payment succeeds). The payments connector will call
`payment_succeeded` and `payment_failed`; until it lands an admin marks a top-up paid
(a manual payment) or failed. The client's `reference` is the top-up's idempotency key."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.errors import FieldError
from billfold.kit.ids import new_id
from billfold.wallets import repository
from billfold.wallets import service as wallets
from billfold.wallets.records import (
    DEFAULT_PRIORITY,
    InvalidWalletRequest,
    TopUp,
    TopUpAlreadyResolved,
    TopUpExistsWithDifferentFields,
    TopUpNotFound,
)

TOP_UP_SOURCES: Final = ("grant", "promotion", "payment")
MAX_FAILURE_LENGTH: Final = 200


async def top_up(
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
) -> TopUp:
    """A top-up of `source` (`grant`, `promotion` or `payment`). A grant or promotion is
    credited now; a payment is `pending` until `payment_succeeded`. The same reference
    again returns the top-up; other fields are `top_up_exists_with_different_fields`."""
    wallets.check_unit(unit)
    wallets.check_amount(amount)
    wallets.check_reference(reference)
    wallets.check_priority(priority)
    if source not in TOP_UP_SOURCES:
        raise InvalidWalletRequest(
            f"a top-up's source is one of {', '.join(TOP_UP_SOURCES)}",
            errors=[FieldError("unknown source", pointer="#/source")],
        )
    found = await wallets.open_wallet(session, ctx, customer_id, unit)
    stored = await repository.top_up_by_reference(session, ctx.tenant_id, reference)
    if stored is not None:
        made = TopUp.of(stored, unit)
        differences = [
            name
            for name, same in (
                ("wallet", made.wallet_id == found.id),
                ("source", made.source == source),
                ("amount", made.amount == amount),
                ("priority", made.priority == priority),
                ("expires_at", made.expires_at == expires_at),
            )
            if not same
        ]
        if differences:
            raise TopUpExistsWithDifferentFields(
                f"top-up {reference!r} exists with other {', '.join(differences)}",
                extra={"top_up_id": made.id, "fields": differences},
            )
        return made
    if expires_at is not None and expires_at <= ctx.now:
        raise InvalidWalletRequest(
            "a top-up's expiry is in the future",
            errors=[FieldError("not in the future", pointer="#/expires_at")],
        )
    top_up_id = new_id("wtu")
    await repository.insert_top_up(
        session,
        {
            "id": top_up_id,
            "tenant_id": ctx.tenant_id,
            "wallet_id": found.id,
            "source": source,
            "reference": reference,
            "amount": amount,
            "priority": priority,
            "expires_at": expires_at,
            "status": "pending",
            "lot_id": None,
            "payment_reference": None,
            "failure": None,
            "created_at": ctx.now,
            "resolved_at": None,
        },
    )
    await eventlog.record(
        session,
        ctx,
        "WalletTopUpCreated",
        {
            "wallet_id": found.id,
            "top_up_id": top_up_id,
            "unit": unit,
            "amount": amount,
            "source": source,
            "reference": reference,
        },
        customer_id=found.customer_id,
    )
    if source == "payment":
        return await get_top_up(session, ctx, top_up_id)
    return await _credit(session, ctx, top_up_id, payment_reference=None)


async def payment_succeeded(
    session: AsyncSession, ctx: Context, *, top_up_id: str, payment_reference: str | None = None
) -> TopUp:
    """The top-up's payment succeeded: credit its lot (source `payment`, funded by
    `cash:{CUR}`). Called again: the same answer. A failed top-up stays failed
    (`top_up_already_resolved`)."""
    if payment_reference is not None:
        wallets.check_reference(payment_reference, pointer="#/payment_reference")
    found = await _locked(session, ctx, top_up_id)
    if found.status == "paid":
        return found
    if found.status == "failed":
        raise TopUpAlreadyResolved(f"top-up {top_up_id!r} failed: {found.failure}")
    return await _credit(session, ctx, top_up_id, payment_reference=payment_reference)


async def payment_failed(
    session: AsyncSession, ctx: Context, *, top_up_id: str, reason: str
) -> TopUp:
    """The top-up's payment failed: nothing is credited. Called again: the same answer.
    A paid top-up stays paid (`top_up_already_resolved`)."""
    found = await _locked(session, ctx, top_up_id)
    if found.status == "failed":
        return found
    if found.status == "paid":
        raise TopUpAlreadyResolved(f"top-up {top_up_id!r} is already paid")
    failure = reason[:MAX_FAILURE_LENGTH]
    await repository.resolve_top_up(
        session, top_up_id, {"status": "failed", "failure": failure, "resolved_at": ctx.now}
    )
    owner = await wallets.wallet(session, ctx, found.wallet_id)
    await eventlog.record(
        session,
        ctx,
        "WalletTopUpFailed",
        {"wallet_id": found.wallet_id, "top_up_id": top_up_id, "reason": failure},
        customer_id=owner.customer_id,
    )
    return await get_top_up(session, ctx, top_up_id)


async def get_top_up(session: AsyncSession, ctx: Context, top_up_id: str) -> TopUp:
    row = await repository.top_up_by_id(session, ctx.tenant_id, top_up_id, lock=False)
    if row is None:
        raise TopUpNotFound(f"no top-up {top_up_id!r}")
    owner = await wallets.wallet(session, ctx, row.wallet_id)
    return TopUp.of(row, owner.unit)


async def _locked(session: AsyncSession, ctx: Context, top_up_id: str) -> TopUp:
    row = await repository.top_up_by_id(session, ctx.tenant_id, top_up_id, lock=False)
    if row is None:
        raise TopUpNotFound(f"no top-up {top_up_id!r}")
    await wallets.wallet(session, ctx, row.wallet_id, lock=True)  # the wallet's writers queue
    return await get_top_up(session, ctx, top_up_id)


async def _credit(
    session: AsyncSession, ctx: Context, top_up_id: str, *, payment_reference: str | None
) -> TopUp:
    pending = await get_top_up(session, ctx, top_up_id)
    owner = await wallets.wallet(session, ctx, pending.wallet_id)
    lot = await wallets.credit(
        session,
        ctx,
        customer_id=await wallets.customer_external_id(session, ctx, owner),
        unit=pending.unit,
        amount=pending.amount,
        source=pending.source,
        reference=pending.reference,
        expires_at=pending.expires_at,
        priority=pending.priority,
    )
    await repository.resolve_top_up(
        session,
        top_up_id,
        {
            "status": "paid",
            "lot_id": lot.id,
            "payment_reference": payment_reference,
            "resolved_at": ctx.now,
        },
    )
    return await get_top_up(session, ctx, top_up_id)
