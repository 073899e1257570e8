"""A consume retried with its idempotency key answers what its first answer said: the same
usage event, overage and wallet payment (decision 0047), with where the quota stands
now; nothing is drawn or paid twice, however many clients retry it at once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from billfold.app import create_app
from billfold.catalog.quotas import Enforcement
from billfold.kit.db import Database
from tests.conftest import Harness, assert_problem, postgresql_only
from tests.factories import quota_usage
from tests.metering.test_quotas import metric
from tests.metering.test_wallet_overage import (
    CONSUME,
    FREE_TOKENS,
    consume,
    paying,
    use_up_the_quota,
    wallet_plans,
)
from tests.wallets.helpers import balance, credit, events

pytestmark = pytest.mark.anyio

# What a replay repeats of its first answer; `used`, `remaining`, `limit` and `resets_at`
# are where the quota stands now, and `replayed` says which answer this is.
REPEATED = ("customer", "feature", "amount", "overage", "enforcement", "event_id", "wallet")


def same_facts(first: dict[str, Any], replay: dict[str, Any]) -> None:
    assert (first["replayed"], replay["replayed"]) == (False, True)
    assert {k: replay[k] for k in REPEATED} == {k: first[k] for k in REPEATED}


async def test_a_replay_answers_the_first_answers_overage_and_payment(
    backend: str, database_url: str
) -> None:
    harness = await paying(database_url, Enforcement.ENFORCE)
    try:
        await credit(harness, 100)
        await use_up_the_quota(harness)
        first = await consume(harness, "o3-run", 7, properties={"model": "o3"})
        assert first.status_code == 200, first.text
        # More usage in between: the replay's standing is the current one.
        assert (await consume(harness, "later", 5)).status_code == 200
        replay = await consume(harness, "o3-run", 7, properties={"model": "o3"})
        assert replay.status_code == 200, replay.text
        same_facts(first.json(), replay.json())
        paid = replay.json()["wallet"]
        assert replay.json()["overage"] == "7"
        # 7 tokens at o3's 0.5 credits is 3.5, rounded up once.
        assert (paid["rate"], paid["cost"], paid["paid"], paid["shortfall"]) == ("0.5", 4, 4, 0)
        assert paid["balance"] == 96  # as it was after this consume, not after "later"
        assert (first.json()["used"], replay.json()["used"]) == ("10007", "10012")
        assert (await balance(harness)).available == 100 - 4 - 10
        # The payment answered is the wallet's own record of it, made once.
        spent = [
            e for e in await events(harness, "WalletSpent") if e["reference"] == paid["reference"]
        ]
        assert len(spent) == 1
        assert (spent[0]["amount"], spent[0]["transfer_ids"]) == (4, paid["transfer_ids"])
        assert spent[0]["balance_after"] == paid["balance"]
        assert len(await events(harness, "UsagePaidFromWallet")) == 2
        assert (await quota_usage(harness))["overage"] == "12"
        # Counted once in /metrics, however often it is answered.
        exposition = (await harness.client.get("/metrics")).text
        paid_total = 'billfold_consume_wallet_paid_total{feature="ai.tokens",unit="credits"}'
        assert metric(exposition, paid_total) == 14
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def test_a_replay_of_a_payment_in_part_and_of_a_missing_wallet(
    backend: str, database_url: str
) -> None:
    """What no wallet spend records (a customer with no wallet pays nothing, stores no
    spend) is answered again all the same."""
    harness = await paying(database_url, Enforcement.ADVISORY)
    try:
        await credit(harness, 15)
        for customer in ("ada", "walletless"):
            await use_up_the_quota(harness, customer)
        part = await consume(harness, "part", 10)
        none = await consume(harness, "none", 3, "walletless")
        assert (part.json()["wallet"]["paid"], part.json()["wallet"]["shortfall"]) == (15, 5)
        assert none.json()["wallet"] == {
            "unit": "credits",
            "rate": "2",
            "cost": 6,
            "paid": 0,
            "shortfall": 6,
            "balance": 0,
            "reference": none.json()["wallet"]["reference"],
            "transfer_ids": [],
        }
        await credit(harness, 50, reference="more")  # a replay draws nothing from it
        same_facts(part.json(), (await consume(harness, "part", 10)).json())
        same_facts(none.json(), (await consume(harness, "none", 3, "walletless")).json())
        assert (await balance(harness)).available == 50
        assert (await quota_usage(harness))["overage"] == "10"
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def test_a_replay_of_a_cost_rounded_to_nothing(backend: str, database_url: str) -> None:
    harness = await paying(database_url, Enforcement.ENFORCE)
    try:
        await harness.apply_plans(
            wallet_plans('    wallet: {unit: credits, rate: "0.25", rounding: half_even}\n')
        )
        await use_up_the_quota(harness)
        first = await consume(harness, "tiny", 1)  # 0.25 credits, half to even: 0
        assert first.json()["wallet"]["cost"] == 0
        same_facts(first.json(), (await consume(harness, "tiny", 1)).json())
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def test_a_replay_without_a_wallet_answers_its_overage(harness: Harness) -> None:
    """Advisory, the tests' plans (no wallet): the overage is the first answer's."""
    within = await consume(harness, "within", FREE_TOKENS - 4)
    over = await consume(harness, "over", 10)
    assert (within.json()["overage"], over.json()["overage"]) == ("0", "6")
    await consume(harness, "after", 1)
    for key, amount, first in (("within", FREE_TOKENS - 4, within), ("over", 10, over)):
        replay = await consume(harness, key, amount)
        same_facts(first.json(), replay.json())
        assert replay.json()["wallet"] is None
    assert (await quota_usage(harness))["overage"] == "7"
    exposition = (await harness.client.get("/metrics")).text
    overage_total = 'billfold_quota_overage_total{enforcement="advisory",feature="ai.tokens"}'
    assert metric(exposition, overage_total) == 7


async def test_a_refused_consume_stays_refused_until_it_is_paid_then_replays(
    backend: str, database_url: str
) -> None:
    """Under enforce, a refusal records nothing: its retry is asked again, refused with
    the same figures while nothing changed, paid once the wallet holds the cost, and
    from then on answered as paid."""
    harness = await paying(database_url, Enforcement.ENFORCE)
    try:
        await credit(harness, 15)
        await use_up_the_quota(harness)
        refusals = [await consume(harness, "dear", 10) for _ in range(2)]
        figures = [
            {k: p[k] for k in ("cost", "balance", "shortfall", "overage", "rate", "unit")}
            for p in (assert_problem(r, 402, "insufficient_balance") for r in refusals)
        ]
        assert figures[0] == figures[1]
        assert (figures[0]["cost"], figures[0]["shortfall"]) == (20, 5)
        assert await events(harness, "WalletSpent") == []
        assert (await quota_usage(harness))["overage"] == "0"
        await credit(harness, 5, reference="more")
        paid = await consume(harness, "dear", 10)
        assert (paid.json()["replayed"], paid.json()["wallet"]["paid"]) == (False, 20)
        # The wallet is empty now; the key's retry is its paid answer, not a refusal.
        same_facts(paid.json(), (await consume(harness, "dear", 10)).json())
        assert (await balance(harness)).available == 0
        assert len(await events(harness, "WalletSpent")) == 1
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def test_retries_that_arrive_together_answer_alike(backend: str, database_url: str) -> None:
    """Sent at once, the same key's consumes share a batch or follow one another: the
    first is drawn and paid, every other one answers it."""
    harness = await paying(database_url, Enforcement.ENFORCE)
    try:
        await credit(harness, 100)
        await use_up_the_quota(harness)
        sent = [consume(harness, f"burst-{n % 3}", 5 + n % 3) for n in range(12)]
        answers = [response.json() for response in await asyncio.gather(*sent)]
        by_key: dict[str, list[dict[str, Any]]] = {}
        for key, answer in zip([f"burst-{n % 3}" for n in range(12)], answers, strict=True):
            by_key.setdefault(key, []).append(answer)
        for answered in by_key.values():
            [first] = [a for a in answered if not a["replayed"]]
            for replay in answered:
                if replay is not first:
                    same_facts(first, replay)
        costs = sorted(a["wallet"]["cost"] for a in answers if not a["replayed"])
        assert costs == [10, 12, 14]
        assert (await balance(harness)).available == 100 - 36
        assert len(await events(harness, "WalletSpent")) == 3
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


CLIENTS = 8  # per key, half through each of two app instances
# Per key: tokens, model, and what the overage costs (gpt-4o at the feature's 2 credits a
# token, o3 at its own 0.5, rounded up).
KEYS = [(3, "gpt-4o", 6), (4, "o3", 2), (5, "gpt-4o", 10), (6, "o3", 3), (7, "o3", 4)]


# Only PostgreSQL runs two processes' batches at once (unlocked first): there a retry can
# race its original in another process, and be answered from the key that won.
@postgresql_only
async def test_parallel_clients_retrying_one_key_see_one_spend_and_one_answer(
    backend: str, database_url: str
) -> None:
    harness = await paying(database_url, Enforcement.ENFORCE)
    database = Database(harness.settings.database_url, pool_size=5)
    other = create_app(harness.settings, clock=harness.clock, database=database)
    transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
    try:
        await credit(harness, 1000)
        await use_up_the_quota(harness)
        async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as client:

            async def send(n: int) -> tuple[int, httpx.Response]:
                index = n % len(KEYS)
                tokens, model, _cost = KEYS[index]
                body = {
                    "customer": "ada",
                    "feature": "ai.tokens",
                    "amount": tokens,
                    "idempotency_key": f"retry-{index}",
                    "properties": {"model": model},
                }
                via = client if n % 2 else harness.client
                return index, await via.post(CONSUME, json=body, headers=harness.admin)

            sent = await asyncio.gather(*(send(n) for n in range(len(KEYS) * CLIENTS)))
        by_key: dict[int, list[dict[str, Any]]] = {}
        for index, response in sent:
            assert response.status_code == 200, response.text
            by_key.setdefault(index, []).append(response.json())
        for index, answered in sorted(by_key.items()):
            assert len(answered) == CLIENTS
            [first] = [a for a in answered if not a["replayed"]]
            for replay in answered:
                if replay is not first:
                    same_facts(first, replay)
            assert first["wallet"]["paid"] == first["wallet"]["cost"] == KEYS[index][2]
        spends = await events(harness, "WalletSpent")
        assert sorted(s["amount"] for s in spends) == sorted(cost for *_, cost in KEYS)
        references = {answered[0]["wallet"]["reference"] for answered in by_key.values()}
        assert {s["reference"] for s in spends} == references
        costs = sum(cost for *_, cost in KEYS)
        assert (await balance(harness)).available == 1000 - costs
        assert len(await events(harness, "UsagePaidFromWallet")) == len(KEYS)
        tokens = sum(tokens for tokens, *_ in KEYS)
        assert (await quota_usage(harness))["overage"] == str(tokens)
    finally:
        await database.dispose()
        await harness.client.aclose()
        await harness.database.dispose()
