"""Many spenders on one wallet at once: never more than the wallet holds, an exact
balance afterwards, and retried references with one effect each."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from billfold.kit.errors import BillfoldError
from billfold.ledger.verify import verify
from billfold.wallets import holds
from billfold.wallets import service as wallets
from tests.conftest import Harness, postgresql_only
from tests.wallets.helpers import balance, credit

pytestmark = pytest.mark.anyio

SPENDERS = 24
SPENDS_EACH = 6
AMOUNT = 7


# Only PostgreSQL runs writers at once (SQLite queues them on one database lock), so only
# there can the wallet's row lock and the ledger's rule be raced.
@postgresql_only
async def test_parallel_spenders_never_overspend(harness: Harness) -> None:
    # Three lots, 500 in all: less than the 24 * 6 * 7 = 1,008 the spenders ask for.
    await credit(harness, 200, reference="a", priority=1)
    await credit(harness, 150, reference="b", priority=2)
    await credit(harness, 150, reference="c", priority=3)
    drawn: dict[str, int] = {}
    refused: Counter[str] = Counter()

    async def spender(number: int) -> None:
        for round_ in range(SPENDS_EACH):
            # Every other spender retries its neighbour's reference: one effect per id.
            reference = f"use-{number // 2}-{round_}"
            try:
                async with harness.database.transaction() as session:
                    spent = await wallets.spend(
                        session,
                        harness.operator(),
                        customer_id="ada",
                        unit="credits",
                        amount=AMOUNT,
                        reference=reference,
                    )
            except BillfoldError as error:
                refused[error.code] += 1
                continue
            assert drawn.setdefault(reference, spent.amount) == spent.amount

    await asyncio.gather(*(spender(n) for n in range(SPENDERS)))

    after = await balance(harness)
    assert set(refused) <= {"insufficient_balance"}, refused
    assert sum(drawn.values()) == 500 - after.available
    assert after.available == 500 % AMOUNT  # every whole spend that fitted was made
    assert len(drawn) == 500 // AMOUNT
    async with harness.database.transaction(write=False) as session:
        checked = await verify(session, harness.tenant_id)
    assert checked.violations == []


# PostgreSQL only, as above: parallel writers race only there.
@postgresql_only
async def test_parallel_holds_and_spends_never_reserve_more_than_there_is(
    harness: Harness,
) -> None:
    await credit(harness, 300, reference="a")
    outcomes: Counter[str] = Counter()

    async def one(number: int) -> None:
        try:
            async with harness.database.transaction() as session:
                if number % 2:
                    await holds.create_hold(
                        session,
                        harness.operator(),
                        customer_id="ada",
                        unit="credits",
                        amount=40,
                        hold_id=f"run-{number}",
                    )
                else:
                    await wallets.spend(
                        session,
                        harness.operator(),
                        customer_id="ada",
                        unit="credits",
                        amount=40,
                        reference=f"use-{number}",
                    )
            outcomes["ok"] += 1
        except BillfoldError as error:
            outcomes[error.code] += 1

    await asyncio.gather(*(one(n) for n in range(20)))

    after = await balance(harness)
    assert outcomes == {"ok": 7, "insufficient_balance": 13}  # 300 // 40
    spent, held = 300 - after.posted, after.held
    assert (spent % 40, held % 40, spent + held, after.available) == (0, 0, 7 * 40, 20)


# PostgreSQL only, as above.
@postgresql_only
async def test_parallel_credits_of_one_reference_make_one_lot(harness: Harness) -> None:
    async def one() -> str:
        async with harness.database.transaction() as session:
            lot = await wallets.credit(
                session,
                harness.operator(),
                customer_id="ada",
                unit="credits",
                amount=100,
                source="grant",
                reference="welcome",
            )
        return lot.id

    made = await asyncio.gather(*(one() for _ in range(10)))

    assert len(set(made)) == 1
    assert (await balance(harness)).available == 100
