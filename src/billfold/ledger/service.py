"""The ledger's rules: accounts, transfers (plain, pending, post, void), linked batches
and expiry. Every function takes the caller's session and a `Context` and never commits.

A batch is applied in four steps: read what already exists (replays), lock every
account it touches in id order, work each transfer out in order against the locked
balances (so the balance rules see the batch's earlier transfers), then insert the new
transfers and write the balances. Nothing is written until every transfer of the batch
has passed, so one refusal leaves no trace (docs/ledger.md)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.context import Context
from billfold.kit.errors import BillfoldError, FieldError
from billfold.kit.ids import new_id
from billfold.kit.invariants import InvariantViolation, invariant
from billfold.kit.money import CURRENCY, minor_units
from billfold.ledger import repository
from billfold.ledger.records import (
    ACCOUNT_TYPES,
    BALANCE_RULES,
    MAX_AMOUNT,
    MAX_BATCH,
    MAX_TIMEOUT_S,
    Account,
    AccountExistsWithDifferentFields,
    AccountNotFound,
    AccountType,
    AmountNotPositive,
    BalanceRule,
    Balances,
    ExceedsCredits,
    ExceedsDebits,
    InvalidAccount,
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

# A client's transfer id: letters, digits and `_ . : -`. `~` is kept for the ids the
# ledger makes itself (an expiry is `<pending id>~expired`), so they never collide.
TRANSFER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,119}$")
ACCOUNT_CODE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$")
CREDIT_UNIT: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
EXPIRY_SUFFIX: Final = "~expired"
MAX_CODE_LENGTH: Final = 100
MAX_RACE_RETRIES: Final = 3
EXPIRE_BATCH: Final = 100


async def create_account(
    session: AsyncSession,
    ctx: Context,
    *,
    code: str,
    type: AccountType,
    unit: str,
    rule: BalanceRule | None = None,
) -> Account:
    """The tenant's account `code`, created if new. The same code with the same fields
    returns the account; with other fields, `AccountExistsWithDifferentFields`."""
    _check_account(code, type, unit, rule)
    await repository.insert_account(
        session,
        {
            "id": new_id("lac"),
            "tenant_id": ctx.tenant_id,
            "code": code,
            "type": type,
            "unit": unit,
            "rule": rule,
            "created_at": ctx.now,
        },
    )
    row = await repository.account_by_code(session, ctx.tenant_id, code)
    if row is None:
        raise InvariantViolation("an account just inserted or found is there")
    account = Account.of(row)
    if (account.type, account.unit, account.rule) != (type, unit, rule):
        raise AccountExistsWithDifferentFields(
            f"account {code!r} exists as {account.type} in {account.unit} "
            f"(rule {account.rule}), not {type} in {unit} (rule {rule})",
            extra={"account_id": account.id},
        )
    return account


async def account(session: AsyncSession, ctx: Context, account_id: str) -> Account:
    row = await repository.account_by_id(session, ctx.tenant_id, account_id)
    if row is None:
        raise AccountNotFound(f"no ledger account {account_id!r}")
    return Account.of(row)


async def account_by_code(session: AsyncSession, ctx: Context, code: str) -> Account:
    row = await repository.account_by_code(session, ctx.tenant_id, code)
    if row is None:
        raise AccountNotFound(f"no ledger account with code {code!r}")
    return Account.of(row)


async def transfer(session: AsyncSession, ctx: Context, request: NewTransfer) -> Transfer:
    """Apply one transfer, or return the one already stored under its id."""
    return (await transfer_many(session, ctx, [request]))[0]


async def transfer_many(
    session: AsyncSession, ctx: Context, requests: Sequence[NewTransfer]
) -> list[Transfer]:
    """Apply a linked batch, in order, all or nothing: a refusal names the transfer
    (`transfers[i] <id>: ...`, and `index` and `transfer_id` in its extra members) and
    nothing of the batch is applied. Transfers whose ids exist with the same fields are
    returned as stored, with no second effect."""
    if not requests:
        return []
    if len(requests) > MAX_BATCH:
        raise InvalidTransfer(f"a batch holds at most {MAX_BATCH} transfers")
    seen: set[str] = set()
    for index, request in enumerate(requests):
        with _naming(index, request):
            _check_shape(request)
            if request.id in seen:
                raise InvalidTransfer(f"transfer id {request.id!r} is twice in the batch")
            seen.add(request.id)
    return await _apply_with_retries(session, ctx, requests, expiring=False)


async def expire(session: AsyncSession, ctx: Context, *, limit: int = EXPIRE_BATCH) -> list[str]:
    """Void the tenant's pending transfers whose timeout has passed (at `ctx.now`), up to
    `limit` of them; returns the voided pending transfers' ids. Each expiry is a transfer
    of kind `expire`, id `<pending id>~expired`, for the pending amount."""
    expired = await repository.expired_pending(session, ctx.tenant_id, ctx.now, limit)
    voided = []
    for row in expired:
        request = NewTransfer(id=f"{row.id}{EXPIRY_SUFFIX}", void_pending_id=row.id, code="expired")
        try:
            await _apply_with_retries(session, ctx, [request], expiring=True)
        except PendingTransferAlreadyResolved:
            continue  # posted or voided since it was read: nothing to release
        voided.append(str(row.id))
    return voided


class _Raced(Exception):
    """Another transaction committed one of the batch's ids (or resolutions) between
    the batch's read and its insert: work the batch out again."""


async def _apply_with_retries(
    session: AsyncSession, ctx: Context, requests: Sequence[NewTransfer], *, expiring: bool
) -> list[Transfer]:
    for _attempt in range(MAX_RACE_RETRIES):
        try:
            async with session.begin_nested():
                return await _apply(session, ctx, requests, expiring=expiring)
        except _Raced:
            continue
    invariant(False, "a batch raced past its retries, though it holds its accounts' locks")
    raise AssertionError  # unreachable


@dataclass
class _Batch:
    """What a batch works with: the locked accounts' balances as the batch moves them,
    the stored transfers it names, and the pending transfers it resolves."""

    accounts: dict[str, Account]
    balances: dict[str, Balances]
    stored: dict[str, Transfer]
    resolved: set[str]


async def _apply(
    session: AsyncSession, ctx: Context, requests: Sequence[NewTransfer], *, expiring: bool
) -> list[Transfer]:
    tenant_id = ctx.tenant_id
    ids = [request.id for request in requests]
    pending_ids = {p for request in requests if (p := _pending_of(request)) is not None}
    stored = await _stored(session, tenant_id, set(ids) | pending_ids)
    # The accounts to lock: each new transfer's, or its pending transfer's.
    account_ids: set[str] = set()
    for request in requests:
        if request.id in stored:
            continue
        pending = stored.get(_pending_of(request) or "")
        for account_id in (request.debit_account_id, request.credit_account_id):
            if account_id is not None:
                account_ids.add(account_id)
        if pending is not None:
            account_ids.update((pending.debit_account_id, pending.credit_account_id))
    locked = {
        row.id: Account.of(row)
        for row in await repository.lock_accounts(session, tenant_id, account_ids)
    }
    # Under the locks: what committed while we waited is visible now.
    batch = _Batch(
        accounts=locked,
        balances={account_id: found.balances for account_id, found in locked.items()},
        stored=await _stored(session, tenant_id, set(ids) | pending_ids),
        resolved=await repository.resolved(session, tenant_id, pending_ids),
    )
    for request in requests:
        pending = batch.stored.get(_pending_of(request) or "")
        needed = {pending.debit_account_id, pending.credit_account_id} if pending else set()
        if request.id not in batch.stored and not needed <= locked.keys():
            # The pending transfer committed between the first read and the locks: its
            # accounts are not locked yet. Work the batch out again, reading it first.
            raise _Raced
    results: list[Transfer] = []
    new: list[Transfer] = []
    for index, request in enumerate(requests):
        with _naming(index, request):
            existing = batch.stored.get(request.id)
            if existing is not None:
                _check_replay(existing, request, batch)
                results.append(existing)
                continue
            made = _work_out(ctx, request, batch, expiring=expiring)
            batch.stored[made.id] = made
            if made.pending_id is not None:
                batch.resolved.add(made.pending_id)
            new.append(made)
            results.append(made)
    if new:
        inserted = await repository.insert_transfers(session, [made.row() for made in new])
        if len(inserted) != len(new):
            raise _Raced
        await repository.save_balances(
            session,
            [
                {"id": account_id, **vars(balances)}
                for account_id, balances in sorted(batch.balances.items())
                if balances != batch.accounts[account_id].balances
            ],
        )
    return results


async def _stored(session: AsyncSession, tenant_id: str, ids: set[str]) -> dict[str, Transfer]:
    rows = await repository.transfers_by_ids(session, tenant_id, ids)
    return {row.id: Transfer.of(row) for row in rows}


def _pending_of(request: NewTransfer) -> str | None:
    return request.post_pending_id or request.void_pending_id


def _work_out(ctx: Context, request: NewTransfer, batch: _Batch, *, expiring: bool) -> Transfer:
    """The transfer `request` makes, its effect applied to the batch's balances, or the
    refusal that stops the batch."""
    pending_id = _pending_of(request)
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


def _account(batch: _Batch, account_id: str | None) -> Account:
    found = batch.accounts.get(account_id or "")
    if found is None:
        raise AccountNotFound(f"no ledger account {account_id!r}")
    return found


def _pending(batch: _Batch, pending_id: str, request: NewTransfer) -> Transfer:
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


def _move(batch: _Batch, account_id: str, **deltas: int) -> None:
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


def _check_replay(existing: Transfer, request: NewTransfer, batch: _Batch) -> None:
    """The request asks for exactly what is stored under its id, or it is a conflict."""
    differences = [name for name, same in _same_fields(existing, request, batch) if not same]
    if differences:
        raise TransferExistsWithDifferentFields(
            f"transfer {request.id!r} exists with other {', '.join(differences)}",
            extra={"fields": differences},
        )


def _same_fields(existing: Transfer, request: NewTransfer, batch: _Batch) -> list[tuple[str, bool]]:
    pending_id = _pending_of(request)
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


def _check_shape(request: NewTransfer) -> None:
    """What can be said of a request before reading anything."""
    if not isinstance(request.id, str) or not TRANSFER_ID.match(request.id):
        raise InvalidTransfer(
            "a transfer id is 1 to 120 letters, digits and _ . : - (starting with a letter "
            "or digit)",
            errors=[FieldError("not a transfer id", pointer="#/id")],
        )
    if len(request.code) > MAX_CODE_LENGTH:
        raise InvalidTransfer(f"a transfer's code is at most {MAX_CODE_LENGTH} characters")
    if request.amount is not None:
        if isinstance(request.amount, bool) or not isinstance(request.amount, int):
            raise AmountNotPositive(
                "an amount is a whole number of minor units",
                errors=[FieldError("not an integer", pointer="#/amount")],
            )
        if request.amount <= 0:
            raise AmountNotPositive(
                f"an amount must be positive, not {request.amount}",
                errors=[FieldError("not positive", pointer="#/amount")],
            )
        if request.amount > MAX_AMOUNT:
            raise InvalidTransfer("an amount fits in 63 bits")
    resolutions = [request.post_pending_id, request.void_pending_id]
    if sum(value is not None for value in resolutions) + request.pending > 1:
        raise InvalidTransfer("a transfer is at most one of pending, a post and a void")
    if _pending_of(request) is None:
        for field in ("debit_account_id", "credit_account_id", "amount"):
            if getattr(request, field) is None:
                raise InvalidTransfer(
                    f"a transfer needs {field}",
                    errors=[FieldError("required", pointer=f"#/{field}")],
                )
        if request.debit_account_id == request.credit_account_id:
            raise InvalidTransfer("a transfer's debit and credit accounts differ")
    if request.timeout_s is not None:
        if not request.pending:
            raise InvalidTransfer("only a pending transfer has a timeout")
        if not 0 < request.timeout_s <= MAX_TIMEOUT_S:
            raise InvalidTransfer(f"a timeout is 1 to {MAX_TIMEOUT_S} seconds")


def _check_account(code: str, type: str, unit: str, rule: str | None) -> None:
    if not ACCOUNT_CODE.match(code):
        raise InvalidAccount(
            "an account code is 1 to 100 letters, digits and _ . : -",
            errors=[FieldError("not an account code", pointer="#/code")],
        )
    if type not in ACCOUNT_TYPES:
        raise InvalidAccount(
            f"an account's type is one of {', '.join(ACCOUNT_TYPES)}",
            errors=[FieldError("unknown type", pointer="#/type")],
        )
    if CURRENCY.match(unit):
        minor_units(unit, pointer="#/unit")
    elif not CREDIT_UNIT.match(unit):
        raise InvalidAccount(
            "an account's unit is an ISO 4217 currency (USD) or a credit unit (credits: "
            "lowercase letters, digits and _)",
            errors=[FieldError("not a unit", pointer="#/unit")],
        )
    if rule is not None and rule not in BALANCE_RULES:
        raise InvalidAccount(
            f"an account's rule is one of {', '.join(BALANCE_RULES)}",
            errors=[FieldError("unknown rule", pointer="#/rule")],
        )


@contextmanager
def _naming(index: int, request: NewTransfer) -> Iterator[None]:
    """Re-raise a refusal about a batch's transfer with the transfer named."""
    try:
        yield
    except BillfoldError as error:
        if "transfer_id" in error.extra:
            raise
        raise type(error)(
            f"transfers[{index}] {request.id}: {error.detail}",
            errors=error.errors,
            extra={**error.extra, "index": index, "transfer_id": request.id},
            headers=error.headers,
        ) from error
