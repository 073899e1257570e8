"""Working a group of transfers out in memory, against the locked accounts' balances
as the earlier transfers of the group left them: the transfer each request makes, or
the refusal that stops it. Nothing here reads or writes the database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from billfold.kit.context import Context
from billfold.kit.errors import FieldError
from billfold.kit.invariants import invariant
from billfold.ledger.checks import pending_of
from billfold.ledger.records import (
    Account,
    AccountNotFound,
    Balances,
    ExceedsCredits,
    ExceedsDebits,
    InvalidTransfer,
    LedgerUnitsDiffer,
    NewTransfer,
    PendingTransferAlreadyResolved,
    PendingTransferExpired,
    PendingTransferNotFound,
    PostExceedsPending,
    Transfer,
    TransferExistsWithDifferentFields,
    TransferKind,
)


@dataclass
class Batch:
    """What a batch works with: the locked accounts' balances as the batch moves them,
    the stored transfers it names, and the pending transfers it resolves."""

    accounts: dict[str, Account]
    balances: dict[str, Balances]
    stored: dict[str, Transfer]
    resolved: set[str]


def work_out(ctx: Context, request: NewTransfer, batch: Batch, *, expiring: bool) -> Transfer:
    """The transfer `request` makes, its effect applied to the batch's balances, or the
    refusal that stops the batch."""
    pending_id = pending_of(request)
    if pending_id is None:
        invariant(request.amount is not None, "a plain or pending transfer has an amount")
        debit = _account(batch, request.debit_account_id)
        credit = _account(batch, request.credit_account_id)
        if debit.unit != credit.unit:
            raise LedgerUnitsDiffer(
                f"account {debit.code!r} holds {debit.unit} and {credit.code!r} holds {credit.unit}"
            )
        amount = int(request.amount or 0)
        kind: TransferKind = "pending" if request.pending else "posted"
        made = Transfer(
            id=request.id,
            tenant_id=ctx.tenant_id,
            kind=kind,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount,
            unit=debit.unit,
            pending_id=None,
            timeout_s=request.timeout_s,
            expires_at=(
                None
                if request.timeout_s is None
                else ctx.now + timedelta(seconds=request.timeout_s)
            ),
            code=request.code,
            metadata=request.metadata,
            created_at=ctx.now,
        )
        if request.pending:
            _move(batch, debit.id, debits_pending=amount)
            _move(batch, credit.id, credits_pending=amount)
        else:
            _move(batch, debit.id, debits_posted=amount)
            _move(batch, credit.id, credits_posted=amount)
        return made
    pending = _pending(batch, pending_id, request)
    if pending_id in batch.resolved:
        raise PendingTransferAlreadyResolved(f"pending transfer {pending_id!r} is already resolved")
    if not expiring and pending.expires_at is not None and ctx.now >= pending.expires_at:
        raise PendingTransferExpired(
            f"pending transfer {pending_id!r} expired at {pending.expires_at.isoformat()}"
        )
    amount = _resolved_amount(request, pending)
    kind = "post" if request.post_pending_id else "expire" if expiring else "void"
    made = Transfer(
        id=request.id,
        tenant_id=ctx.tenant_id,
        kind=kind,
        debit_account_id=pending.debit_account_id,
        credit_account_id=pending.credit_account_id,
        amount=amount,
        unit=pending.unit,
        pending_id=pending_id,
        timeout_s=None,
        expires_at=None,
        code=request.code,
        metadata=request.metadata,
        created_at=ctx.now,
    )
    posted = amount if kind == "post" else 0
    _move(batch, pending.debit_account_id, debits_pending=-pending.amount, debits_posted=posted)
    _move(batch, pending.credit_account_id, credits_pending=-pending.amount, credits_posted=posted)
    return made


def _account(batch: Batch, account_id: str | None) -> Account:
    found = batch.accounts.get(account_id or "")
    if found is None:
        raise AccountNotFound(f"no ledger account {account_id!r}")
    return found


def _pending(batch: Batch, pending_id: str, request: NewTransfer) -> Transfer:
    pending = batch.stored.get(pending_id)
    if pending is None or pending.kind != "pending":
        raise PendingTransferNotFound(f"no pending transfer {pending_id!r}")
    for given, field, expected in (
        (request.debit_account_id, "debit_account_id", pending.debit_account_id),
        (request.credit_account_id, "credit_account_id", pending.credit_account_id),
    ):
        if given is not None and given != expected:
            raise InvalidTransfer(
                f"{field} {given!r} is not the pending transfer's ({expected!r})",
                errors=[FieldError("not the pending transfer's", pointer=f"#/{field}")],
            )
    return pending


def _resolved_amount(request: NewTransfer, pending: Transfer) -> int:
    """A post's amount (the pending amount unless it names less), or a void's (the
    pending amount: a void releases all of it)."""
    if request.amount is None:
        return pending.amount
    if request.post_pending_id is not None:
        if request.amount > pending.amount:
            raise PostExceedsPending(
                f"post of {request.amount} exceeds the pending {pending.amount}",
                extra={"pending_amount": pending.amount},
            )
        return request.amount
    if request.amount != pending.amount:
        raise InvalidTransfer(
            f"a void releases the whole pending amount ({pending.amount}), not {request.amount}",
            errors=[FieldError("a void's amount is the pending amount", pointer="#/amount")],
        )
    return request.amount


def _move(batch: Batch, account_id: str, **deltas: int) -> None:
    balances = batch.balances[account_id].moved(**deltas)
    account = batch.accounts[account_id]
    if account.rule is not None and balances.breaks(account.rule):
        # A rule stops only what adds to the side it limits: a release or a posting on
        # the other side is always let through.
        side, other = (
            ("debits", "credits")
            if account.rule == "debits_must_not_exceed_credits"
            else ("credits", "debits")
        )
        if deltas.get(f"{side}_posted", 0) > 0 or deltas.get(f"{side}_pending", 0) > 0:
            refusal = ExceedsCredits if side == "debits" else ExceedsDebits
            taken = getattr(balances, f"{side}_posted") + getattr(balances, f"{side}_pending")
            raise refusal(
                f"account {account.code!r} would have {side} (posted and pending) of "
                f"{taken} against {other} of {getattr(balances, f'{other}_posted')}",
                extra={"account_id": account.id},
            )
    batch.balances[account_id] = balances


def check_replay(existing: Transfer, request: NewTransfer, batch: Batch) -> None:
    """The request asks for exactly what is stored under its id, or it is a conflict."""
    differences = [name for name, same in _same_fields(existing, request, batch) if not same]
    if differences:
        raise TransferExistsWithDifferentFields(
            f"transfer {request.id!r} exists with other {', '.join(differences)}",
            extra={"fields": differences},
        )


def _same_fields(existing: Transfer, request: NewTransfer, batch: Batch) -> list[tuple[str, bool]]:
    pending_id = pending_of(request)
    kind = "post" if request.post_pending_id else "void" if request.void_pending_id else None
    if kind is None:
        kind = "pending" if request.pending else "posted"
    if existing.kind == "expire" and kind == "void":
        kind = "expire"
    amount = request.amount
    if amount is None and pending_id is not None:
        pending = batch.stored.get(pending_id)
        amount = pending.amount if pending is not None else None
    return [
        ("kind", existing.kind == kind),
        ("pending_id", existing.pending_id == pending_id),
        (
            "debit_account_id",
            request.debit_account_id in (None, existing.debit_account_id)
            if pending_id
            else request.debit_account_id == existing.debit_account_id,
        ),
        (
            "credit_account_id",
            request.credit_account_id in (None, existing.credit_account_id)
            if pending_id
            else request.credit_account_id == existing.credit_account_id,
        ),
        ("amount", existing.amount == amount),
        ("timeout_s", existing.timeout_s == request.timeout_s),
        ("code", existing.code == request.code),
        ("metadata", _same_metadata(existing.metadata, request.metadata)),
    ]


def _same_metadata(stored: Mapping[str, Any] | None, given: Mapping[str, Any] | None) -> bool:
    return (dict(stored) if stored else None) == (dict(given) if given else None)
