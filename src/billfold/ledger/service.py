"""The ledger's rules: accounts, transfers (plain, pending, post, void), linked batches,
groups of requests applied together, and expiry. Every function takes the caller's
session and a `Context` and never commits.

A group of requests (each a linked batch; a single transfer is a batch of one) is
applied in four steps: read what already exists (replays), lock every account it touches
in id order, work each request out in order against the locked balances (so the balance
rules see the group's earlier transfers), then insert the new transfers and write the
balances. A refused request is taken back out of the balances before the next is worked
out, so it leaves no trace and refuses only itself; nothing is written until every
request has been worked out (docs/ledger.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.context import Context
from billfold.kit.errors import BillfoldError
from billfold.kit.ids import new_id
from billfold.kit.invariants import InvariantViolation, invariant
from billfold.ledger import repository
from billfold.ledger.checks import check_account, check_linked, naming, pending_of
from billfold.ledger.records import (
    Account,
    AccountExistsWithDifferentFields,
    AccountNotFound,
    AccountType,
    BalanceRule,
    NewTransfer,
    PendingTransferAlreadyResolved,
    Transfer,
    TransferNotFound,
)
from billfold.ledger.working import Batch, check_replay, work_out

EXPIRY_SUFFIX: Final = "~expired"
MAX_RACE_RETRIES: Final = 3
EXPIRE_BATCH: Final = 100


@dataclass(frozen=True)
class Linked:
    """One client's request in a group: a linked batch (all or nothing), in its context."""

    ctx: Context
    transfers: Sequence[NewTransfer]


# A request's answer in a group: its transfers, or its own refusal.
Answer = list[Transfer] | BillfoldError


class GroupRaced(Exception):
    """Another transaction committed one of the group's ids (or resolutions) between
    the group's read and its insert: the group's transaction must be rolled back and the
    group worked out again."""


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
    check_account(code, type, unit, rule)
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


async def transfer_by_id(session: AsyncSession, ctx: Context, transfer_id: str) -> Transfer:
    row = await repository.transfer_by_id(session, ctx.tenant_id, transfer_id)
    if row is None:
        raise TransferNotFound(f"no ledger transfer {transfer_id!r}")
    return Transfer.of(row)


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
    check_linked(requests)
    return await _apply_with_retries(session, ctx, requests, expiring=False)


async def transfer_group(session: AsyncSession, requests: Sequence[Linked]) -> list[Answer]:
    """Apply many clients' requests of one tenant together, in order, each as
    `transfer_many` would alone against the balances the earlier ones left: its
    transfers, or its refusal, which leaves nothing of that request and nothing else
    refused. Each request must have passed `checks.check_linked`. Raises `GroupRaced`
    if another transaction took one of its ids meanwhile: the caller rolls back and
    calls again."""
    if not requests:
        return []
    tenants = {request.ctx.tenant_id for request in requests}
    invariant(len(tenants) == 1, "a group holds one tenant's requests")
    return await _apply(session, requests, expiring=False, grouped=True)


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


async def _apply_with_retries(
    session: AsyncSession, ctx: Context, requests: Sequence[NewTransfer], *, expiring: bool
) -> list[Transfer]:
    """One linked batch in the caller's transaction. A batch of one transfer needs no
    savepoint: if its insert skips the id, nothing was written, and it is worked out
    again under the locks it holds. A longer batch's insert may write some of its rows
    before finding one taken, so it runs under a savepoint that a race rolls back."""
    for _attempt in range(MAX_RACE_RETRIES):
        try:
            if len(requests) == 1:
                answer = (await _apply(session, [Linked(ctx, requests)], expiring=expiring))[0]
            else:
                async with session.begin_nested():
                    answer = (await _apply(session, [Linked(ctx, requests)], expiring=expiring))[0]
        except GroupRaced:
            continue
        if isinstance(answer, BillfoldError):
            raise answer
        return answer
    invariant(False, "a batch raced past its retries, though it holds its accounts' locks")
    raise AssertionError  # unreachable


async def _apply(
    session: AsyncSession, requests: Sequence[Linked], *, expiring: bool, grouped: bool = False
) -> list[Answer]:
    """`grouped`: the caller rolls the transaction back on `GroupRaced`, so the group
    may write before it knows that every insert went through."""
    tenant_id = requests[0].ctx.tenant_id
    every = [each for request in requests for each in request.transfers]
    ids = {each.id for each in every}
    pending_ids = {p for each in every if (p := pending_of(each)) is not None}
    # The accounts to lock: each transfer's, or its pending transfer's, which only a
    # first read can tell. Without posts or voids there is nothing to read first: the
    # accounts of a replay are locked too, which costs nothing.
    first = await _stored(session, tenant_id, ids | pending_ids) if pending_ids else {}
    account_ids: set[str] = set()
    for each in every:
        if each.id in first:
            continue
        for account_id in (each.debit_account_id, each.credit_account_id):
            if account_id is not None:
                account_ids.add(account_id)
        pending = first.get(pending_of(each) or "")
        if pending is not None:
            account_ids.update((pending.debit_account_id, pending.credit_account_id))
    # A group without posts or voids locks its accounts and finds which of its ids are
    # stored in one round trip (PostgreSQL), and reads the stored ones only if any are.
    lock_found = (
        None
        if pending_ids or not grouped
        else await repository.lock_and_find(session, tenant_id, account_ids, ids)
    )
    if lock_found is not None:
        rows, stored_ids = lock_found
        stored = await _stored(session, tenant_id, stored_ids) if stored_ids else {}
    else:
        rows = await repository.lock_accounts(session, tenant_id, account_ids)
        # Under the locks: what committed while we waited is visible now.
        stored = await _stored(session, tenant_id, ids | pending_ids)
    locked = {row.id: Account.of(row) for row in rows}
    batch = Batch(
        accounts=locked,
        balances={account_id: found.balances for account_id, found in locked.items()},
        stored=stored,
        resolved=await repository.resolved(session, tenant_id, pending_ids),
    )
    for each in every:
        pending = batch.stored.get(pending_of(each) or "")
        needed = {pending.debit_account_id, pending.credit_account_id} if pending else set()
        if each.id not in batch.stored and not needed <= locked.keys():
            # The pending transfer committed between the first read and the locks: its
            # accounts are not locked yet. Work the group out again, reading it first.
            raise GroupRaced
    answers: list[Answer] = []
    new: list[Transfer] = []
    for request in requests:
        answer, made = _work_out_request(request, batch, expiring=expiring)
        new.extend(made)
        answers.append(answer)
    if not new:
        return answers
    new_rows = [made.row() for made in new]
    balances = [
        {"id": account_id, **vars(balances)}
        for account_id, balances in batch.balances.items()
        if balances != batch.accounts[account_id].balances
    ]
    if grouped:  # the caller rolls the whole transaction back on a race
        inserted = await repository.write_group(session, new_rows, balances)
    else:
        inserted = await repository.insert_transfers(session, new_rows)
    if len(inserted) != len(new):
        raise GroupRaced
    if not grouped:
        await repository.save_balances(session, balances)
    return answers


def _work_out_request(
    request: Linked, batch: Batch, *, expiring: bool
) -> tuple[Answer, list[Transfer]]:
    """The request's transfers (and those of them it makes), applied to the group's
    balances; or its refusal, with the balances and stored transfers as they were
    before it (and nothing made)."""
    balances = dict(batch.balances)
    made_here: list[Transfer] = []
    resolved_here: list[str] = []
    results: list[Transfer] = []
    try:
        for index, each in enumerate(request.transfers):
            with naming(index, each):
                existing = batch.stored.get(each.id)
                if existing is not None:
                    check_replay(existing, each, batch)
                    results.append(existing)
                    continue
                made = work_out(request.ctx, each, batch, expiring=expiring)
                batch.stored[made.id] = made
                made_here.append(made)
                if made.pending_id is not None:
                    batch.resolved.add(made.pending_id)
                    resolved_here.append(made.pending_id)
                results.append(made)
    except BillfoldError as refusal:
        batch.balances.clear()
        batch.balances.update(balances)
        for made in made_here:
            del batch.stored[made.id]
        batch.resolved.difference_update(resolved_here)
        return refusal, []
    return results, made_here


async def _stored(session: AsyncSession, tenant_id: str, ids: set[str]) -> dict[str, Transfer]:
    rows = await repository.transfers_by_ids(session, tenant_id, ids)
    return {row.id: Transfer.of(row) for row in rows}
