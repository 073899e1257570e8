"""Overage paid from a wallet: drawn in the same step as consume, refused with 402
`insufficient_balance` under enforce when the wallet is short, paid in part under
advisory, once per idempotency key, and never more than the wallet holds under load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from billfold.app import create_app
from billfold.catalog.quotas import Enforcement
from billfold.kit.db import Database
from billfold.kit.errors import BillfoldError
from billfold.ledger.verify import verify
from tests.conftest import PLANS, Harness, assert_problem, new_harness, postgresql_only
from tests.factories import quota_usage
from tests.wallets.helpers import balance, credit, event_types, events, spend

pytestmark = pytest.mark.anyio

CONSUME = "/v1/entitlements/consume"
FREE_TOKENS = 10_000  # the free plan's monthly ai.tokens

# The tests' plans, with ai.tokens' overage paid from the `credits` wallet at 2 credits a
# token, and o3 priced at half a credit a token.
WALLET = '    wallet: {unit: credits, rate: "2"}\n'
O3_CREDITS = 'o3: {prompt: 200, completion: 800, credits: "0.5"}'


def wallet_plans(wallet: str = WALLET, *, extra: str = "") -> str:
    text = PLANS.read_text()
    marker = "    limit: hard        # enforce refuses"
    head, tail = text.split(marker, 1)
    line_end = tail.index("\n") + 1
    text = head + marker + tail[:line_end] + wallet + extra + tail[line_end:]
    return _unpriced(text).replace("o3: {prompt: 200, completion: 800}", O3_CREDITS)


def _unpriced(text: str) -> str:
    """The plans without their `usage:` prices: a plan may not also bill in arrears the
    meter a wallet pays (it would be charged twice), and these tests bill by wallet."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip())
        if line.rstrip() == "        usage:":
            skipping = True
            continue
        if skipping and (not line.strip() or indent > 8):
            continue
        skipping = False
        kept.append(line)
    return "".join(kept)


async def paying(database_url: str, enforcement: Enforcement) -> Harness:
    built = await new_harness(database_url, enforcement=enforcement)
    await built.apply_plans(wallet_plans())
    return built


@pytest.fixture
async def enforcing(database_url: str) -> AsyncIterator[Harness]:
    built = await paying(database_url, Enforcement.ENFORCE)
    try:
        yield built
    finally:
        await built.client.aclose()
        await built.database.dispose()


@pytest.fixture
async def advisory(database_url: str) -> AsyncIterator[Harness]:
    built = await paying(database_url, Enforcement.ADVISORY)
    try:
        yield built
    finally:
        await built.client.aclose()
        await built.database.dispose()


async def consume(
    harness: Harness, key: str, amount: Any, customer: str = "ada", **extra: Any
) -> httpx.Response:
    body = {"customer": customer, "feature": "ai.tokens", "amount": amount, "idempotency_key": key}
    return await harness.post(CONSUME, {**body, **extra})


async def use_up_the_quota(harness: Harness, customer: str = "ada") -> None:
    response = await consume(harness, f"all-of-it-{customer}", FREE_TOKENS, customer)
    assert response.status_code == 200, response.text
    assert response.json()["wallet"] is None  # within the quota: no wallet involved


async def test_overage_is_paid_from_the_wallet_in_the_same_step(enforcing: Harness) -> None:
    await credit(enforcing, 100)
    await consume(enforcing, "first", FREE_TOKENS - 5)
    # 5 tokens left: 15 asked, 10 past the quota at 2 credits a token.
    response = await consume(enforcing, "over", 15)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["overage"] == "10"
    paid = body["wallet"]
    assert paid["unit"] == "credits"
    assert (paid["rate"], paid["cost"], paid["paid"], paid["shortfall"]) == ("2", 20, 20, 0)
    assert paid["balance"] == 80
    assert len(paid["transfer_ids"]) == 1
    assert (await balance(enforcing)).available == 80
    assert (await quota_usage(enforcing))["overage"] == "10"
    [entry] = await events(enforcing, "UsagePaidFromWallet")
    assert entry["event_id"] == body["event_id"]
    assert entry["transfer_ids"] == paid["transfer_ids"]
    assert (entry["cost"], entry["paid"], entry["overage"]) == (20, 20, "10")
    [spent] = await events(enforcing, "WalletSpent")
    assert spent["reference"] == paid["reference"]
    assert spent["transfer_ids"] == paid["transfer_ids"]


async def test_enforce_refuses_what_the_wallet_cannot_pay_and_records_nothing(
    enforcing: Harness,
) -> None:
    await credit(enforcing, 15)
    await use_up_the_quota(enforcing)
    refused = await consume(enforcing, "too-dear", 10)  # costs 20
    problem = assert_problem(refused, 402, "insufficient_balance")
    assert (problem["cost"], problem["balance"], problem["shortfall"]) == (20, 15, 5)
    assert (problem["unit"], problem["feature"], problem["overage"]) == (
        "credits",
        "ai.tokens",
        "10",
    )
    assert (await balance(enforcing)).available == 15
    usage = await quota_usage(enforcing)
    assert (usage["used"], usage["overage"]) == (str(FREE_TOKENS), "0")
    assert await event_types(enforcing, "UsagePaid") == []
    # Once the wallet holds enough, the same key goes through, and is paid once.
    await credit(enforcing, 5, reference="more")
    allowed = await consume(enforcing, "too-dear", 10)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["wallet"]["paid"] == 20
    assert (await balance(enforcing)).available == 0


async def test_a_customer_without_a_wallet_is_refused_under_enforce(enforcing: Harness) -> None:
    await use_up_the_quota(enforcing, "walletless")
    problem = assert_problem(
        await consume(enforcing, "w", 1, "walletless"), 402, "insufficient_balance"
    )
    assert (problem["cost"], problem["balance"], problem["shortfall"]) == (2, 0, 2)


async def test_advisory_draws_what_there_is_and_allows_the_rest(advisory: Harness) -> None:
    await credit(advisory, 15)
    await use_up_the_quota(advisory)
    response = await consume(advisory, "short", 10)
    assert response.status_code == 200, response.text
    paid = response.json()["wallet"]
    assert (paid["cost"], paid["paid"], paid["shortfall"], paid["balance"]) == (20, 15, 5, 0)
    assert (await balance(advisory)).available == 0
    assert (await quota_usage(advisory))["overage"] == "10"
    [entry] = await events(advisory, "UsagePaidFromWallet")
    assert (entry["paid"], entry["shortfall"], entry["enforcement"]) == (15, 5, "advisory")
    assert await event_types(advisory, "QuotaExceeded") == ["QuotaExceeded"]
    # An empty wallet pays nothing; the usage is still allowed and recorded as overage.
    again = await consume(advisory, "nothing-left", 1)
    assert again.status_code == 200, again.text
    assert (again.json()["wallet"]["paid"], again.json()["wallet"]["shortfall"]) == (0, 2)
    assert (await quota_usage(advisory))["overage"] == "11"


async def test_a_retry_pays_once_and_another_body_is_refused(enforcing: Harness) -> None:
    await credit(enforcing, 100)
    await use_up_the_quota(enforcing)
    first = await consume(enforcing, "once", 10)
    retried = await consume(enforcing, "once", 10)
    assert first.status_code == retried.status_code == 200
    assert retried.json()["replayed"] is True
    assert retried.json()["event_id"] == first.json()["event_id"]
    # The replay answers the payment that was made, and draws nothing more.
    assert retried.json()["wallet"] == first.json()["wallet"]
    assert retried.json()["overage"] == first.json()["overage"] == "10"
    assert (await balance(enforcing)).available == 80
    assert_problem(await consume(enforcing, "once", 11), 422, "idempotency_key_reused")
    assert (await balance(enforcing)).available == 80
    assert len(await events(enforcing, "WalletSpent")) == 1


async def test_an_ai_model_with_a_credit_rate_is_paid_at_it(enforcing: Harness) -> None:
    await credit(enforcing, 100)
    await use_up_the_quota(enforcing)
    o3 = await consume(enforcing, "o3", 7, properties={"model": "o3"})
    assert (o3.json()["wallet"]["rate"], o3.json()["wallet"]["cost"]) == ("0.5", 4)  # 3.5 up
    other = await consume(enforcing, "4o", 7, properties={"model": "gpt-4o"})
    assert (other.json()["wallet"]["rate"], other.json()["wallet"]["cost"]) == ("2", 14)
    assert (await balance(enforcing)).available == 100 - 4 - 14


async def test_the_rounding_the_plans_file_names_applies_once_per_consume(
    backend: str, database_url: str
) -> None:
    harness = await paying(database_url, Enforcement.ENFORCE)
    try:
        rounding = '    wallet: {unit: credits, rate: "0.25", rounding: half_even}\n'
        await harness.apply_plans(wallet_plans(rounding))
        await credit(harness, 10)
        await use_up_the_quota(harness)
        costs = []
        for key, tokens in (("a", 2), ("b", 6), ("c", 1)):  # 0.5 -> 0, 1.5 -> 2, 0.25 -> 0
            response = await consume(harness, key, tokens)
            assert response.status_code == 200, response.text
            costs.append(response.json()["wallet"]["cost"])
        assert costs == [0, 2, 0]
        assert (await balance(harness)).available == 8
        assert len(await events(harness, "UsagePaidFromWallet")) == 1  # nothing to record at 0
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def test_overage_allowed_under_enforce_is_paid_in_part(
    backend: str, database_url: str
) -> None:
    harness = await paying(database_url, Enforcement.ENFORCE)
    try:
        await harness.apply_plans(wallet_plans(extra="    overage: true\n"))
        await credit(harness, 5)
        await use_up_the_quota(harness)
        response = await consume(harness, "k", 10)
        assert response.status_code == 200, response.text
        assert (response.json()["wallet"]["paid"], response.json()["wallet"]["shortfall"]) == (
            5,
            15,
        )
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


IMAGES = """  images:
    event: image.generated
    aggregation: sum
    property: images
"""
IMAGES_FEATURE = """  ai.images:
    type: metered
    meter: images
    wallet: {unit: credits, rate: "3"}
"""
FUNDS = 500
TOKENS = 7  # a consume of ai.tokens past the quota: 14 credits
# Per customer: two processes' consumes of two features paid from one wallet, in
# opposite orders, and spends of the same wallet from outside consume.
ROUNDS = 24


def two_features() -> str:
    text = wallet_plans().replace("meters:\n", "meters:\n" + IMAGES, 1)
    return text.replace("\nplans:\n", "\n" + IMAGES_FEATURE + "\nplans:\n", 1)


# Only PostgreSQL runs consume batches at once (two processes, unlocked first), so only
# there can the quota accounts, the wallets' locks and the ledger's rule be raced.
@postgresql_only
async def test_parallel_consumes_never_overspend_the_wallet(enforcing: Harness) -> None:
    await enforcing.apply_plans(two_features())
    customers = ("ada", "bob")
    for customer in customers:
        await credit(enforcing, 300, customer=customer, reference=f"a-{customer}", priority=1)
        await credit(enforcing, 200, customer=customer, reference=f"b-{customer}", priority=2)
        await use_up_the_quota(enforcing, customer)
    database = Database(enforcing.settings.database_url, pool_size=5)
    other = create_app(enforcing.settings, clock=enforcing.clock, database=database)
    transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
    accepted: dict[tuple[str, str], int] = {}  # (customer, key) -> credits paid
    answered: dict[tuple[str, str], list[dict[str, Any]]] = {}  # every 200, by key
    refused: list[tuple[str, int]] = []  # (customer, cost)
    outside: dict[str, int] = dict.fromkeys(customers, 0)
    outside_refusals: list[str] = []

    async def one(client: httpx.AsyncClient, customer: str, feature: str, key: str) -> None:
        amount = TOKENS if feature == "ai.tokens" else 2  # 14 or 6 credits
        body = {"customer": customer, "feature": feature, "amount": amount, "idempotency_key": key}
        response = await client.post(CONSUME, json=body, headers=enforcing.admin)
        if response.status_code == 200:
            answer = response.json()
            answered.setdefault((customer, key), []).append(answer)
            if not answer["replayed"]:
                assert answer["wallet"]["paid"] == answer["wallet"]["cost"] > 0
                assert (customer, key) not in accepted
                accepted[(customer, key)] = answer["wallet"]["paid"]
        else:
            problem = assert_problem(response, 402, "insufficient_balance")
            refused.append((customer, problem["cost"]))

    async def spender(customer: str, number: int) -> None:
        try:
            spent = await spend(enforcing, 5, f"outside-{customer}-{number}", customer=customer)
        except BillfoldError as error:
            outside_refusals.append(error.code)
            return
        outside[customer] += spent.amount

    async def process(client: httpx.AsyncClient, flip: bool) -> None:
        order = [
            ("ada", "ai.tokens"),
            ("bob", "ai.images"),
            ("bob", "ai.tokens"),
            ("ada", "ai.images"),
        ]
        sends = []
        for number in range(ROUNDS):
            for customer, feature in reversed(order) if flip else order:
                # The same key from both processes: a retry racing its original.
                sends.append(one(client, customer, feature, f"{customer}-{feature}-{number}"))
        await asyncio.gather(*sends)

    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as client:
            await asyncio.gather(
                process(enforcing.client, False),
                process(client, True),
                *(spender(customer, n) for customer in customers for n in range(8)),
            )
    finally:
        await database.dispose()

    assert set(outside_refusals) <= {"insufficient_balance"}
    # A key's retry, racing its original from the other process, answers what it did.
    for answers in answered.values():
        assert [a["replayed"] for a in answers].count(False) == 1
        facts = {(a["event_id"], a["overage"], repr(a["wallet"])) for a in answers}
        assert len(facts) == 1, answers
    for customer in customers:
        after = await balance(enforcing, customer)
        paid = sum(amount for (who, _key), amount in accepted.items() if who == customer)
        assert after.available >= 0
        assert paid + outside[customer] == FUNDS - after.available
        # Refused exactly when the wallet was short: balances only went down, so each
        # refusal's cost is more than what is left at the end.
        assert all(cost > after.available for who, cost in refused if who == customer)
        # 24 x 14 + 24 x 6 + 8 x 5 = 520 asked of 500: someone was refused
        assert any(who == customer for who, _cost in refused) or outside_refusals
        tokens = await quota_usage(enforcing, customer)
        paid_tokens = sum(1 for (who, key) in accepted if who == customer and "tokens" in key)
        assert Decimal(tokens["overage"]) == TOKENS * paid_tokens
    assert len(await events(enforcing, "UsagePaidFromWallet")) == len(accepted)
    async with enforcing.database.transaction(write=False) as session:
        checked = await verify(session, enforcing.tenant_id)
    assert checked.violations == []
