"""Parallel clients on PostgreSQL: the same settlement sent at once has one effect, and
payout runs at once never pay anything twice, while settlements go on."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from billfold.kit.errors import BillfoldError
from billfold.settlement import payouts
from billfold.settlement.records import PayoutBatch
from tests.conftest import Harness, postgresql_only
from tests.settlement.helpers import assert_ledger_verifies, net, put_split, settle

pytestmark = pytest.mark.anyio

CLIENTS = 8


# Only PostgreSQL runs writers at once (SQLite queues them on one database lock), so only
# there can the race on a settlement's id, and on the payables, be tested.
@postgresql_only
async def test_the_same_settlement_sent_at_once_settles_once(platform: Harness) -> None:
    await put_split(platform, "chess")
    answers = await asyncio.gather(
        *(
            settle(platform, "pay-race", "public_app_purchase", 10_000, app_id="chess")
            for _ in range(CLIENTS)
        )
    )
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 1, 200: CLIENTS - 1}, [a.text for a in answers]
    assert len({answer.text for answer in answers}) == 1
    assert await net(platform, "cash:USD") == -10_000
    assert await net(platform, "payable:ada:USD") == 4825
    events = (await platform.get("/v1/audit/events", params={"type": "SettlementSettled"})).json()
    assert len(events["events"]) == 1
    await assert_ledger_verifies(platform)


@postgresql_only
async def test_payout_runs_at_once_never_pay_twice(platform: Harness) -> None:
    await put_split(platform, "chess")
    for n in range(4):
        await settle(platform, f"before-{n}", "public_app_purchase", 1000 + n, app_id="chess")
    batches: list[PayoutBatch] = []
    refused: list[str] = []

    async def run(period: str) -> None:
        try:
            async with platform.database.transaction() as session:
                batches.append(await payouts.run(session, platform.operator(), period))
        except BillfoldError as error:
            refused.append(error.code)

    async def more(n: int) -> None:
        response = await settle(platform, f"during-{n}", "public_app_purchase", 500, app_id="chess")
        assert response.status_code == 201, response.text

    # Three runs of one period, three of others, and settlements, all at once.
    await asyncio.gather(
        *(run("2026-06-01") for _ in range(3)),
        *(run(f"2026-06-0{day}") for day in (2, 3, 4)),
        *(more(n) for n in range(4)),
    )
    assert refused == []
    made = [batch for batch in batches if batch.created]
    assert len({batch.period for batch in made}) == len(made) == 4
    paid = Counter[str]()
    transfer_ids = [line.transfer_id for batch in made for line in batch.lines]
    assert len(transfer_ids) == len(set(transfer_ids))
    for batch in made:
        for line in batch.lines:
            paid[line.payee] += line.amount
    # Each payee was paid what it was credited, less what it is still owed: never more.
    for payee in ("ada", "ivy", "ole"):
        owed = await net(platform, f"payable:{payee}:USD")
        assert owed is not None
        assert owed >= 0
        credited = owed + paid[payee]
        settled = [
            (await platform.get(f"/v1/settlements/{sid}")).json()
            for sid in [f"before-{n}" for n in range(4)] + [f"during-{n}" for n in range(4)]
        ]
        assert credited == sum(
            part["amount"] for s in settled for part in s["parts"] if part["payee"] == payee
        )
    # Same-period runs answered the one batch of their period.
    first = [batch for batch in batches if batch.period == "2026-06-01"]
    assert len({batch.id for batch in first}) == 1
    await assert_ledger_verifies(platform)
