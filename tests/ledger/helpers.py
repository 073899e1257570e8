"""What the ledger's tests share: accounts in one line, transfers in their own
transaction, and the stored account as it is now."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from billfold.ledger import service as ledger
from billfold.ledger.records import Account, BalanceRule, NewTransfer, Transfer
from tests.conftest import Harness


async def account(
    harness: Harness,
    code: str,
    *,
    unit: str = "USD",
    type: Any = "asset",
    rule: BalanceRule | None = None,
) -> Account:
    async with harness.database.transaction() as session:
        return await ledger.create_account(
            session, harness.operator(), code=code, type=type, unit=unit, rule=rule
        )


async def move(
    harness: Harness, id: str, debit: str, credit: str, amount: int, **kw: Any
) -> Transfer:
    return await apply(harness, NewTransfer(id, debit, credit, amount, **kw))


async def apply(harness: Harness, request: NewTransfer) -> Transfer:
    async with harness.database.transaction() as session:
        return await ledger.transfer(session, harness.operator(), request)


async def apply_many(harness: Harness, requests: Sequence[NewTransfer]) -> list[Transfer]:
    async with harness.database.transaction() as session:
        return await ledger.transfer_many(session, harness.operator(), requests)


async def balances(harness: Harness, found: Account) -> tuple[int, int, int, int]:
    """(debits_posted, credits_posted, debits_pending, credits_pending) as stored now."""
    async with harness.database.transaction(write=False) as session:
        now = await ledger.account(session, harness.operator(), found.id)
    return (now.debits_posted, now.credits_posted, now.debits_pending, now.credits_pending)
