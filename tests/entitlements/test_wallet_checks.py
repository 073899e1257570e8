"""The check API on a feature paid from a wallet: past the quota, allowed while the
wallet holds the overage's cost, priced exactly as consume prices it (an AI model's own
credit rate included), and it draws nothing."""

from __future__ import annotations

import pytest

from billfold.catalog.quotas import Enforcement
from tests.conftest import Harness, assert_problem
from tests.factories import check
from tests.metering.test_wallet_overage import (
    FREE_TOKENS,
    O3_CREDITS,
    consume,
    paying,
    use_up_the_quota,
    wallet_plans,
)
from tests.wallets.helpers import balance, credit

pytestmark = pytest.mark.anyio


async def test_past_the_quota_the_wallet_decides_the_check(backend: str, database_url: str) -> None:
    harness = await paying(database_url, Enforcement.ENFORCE)
    try:
        within = await check(harness, customer="ada", feature="ai.tokens", requested=FREE_TOKENS)
        assert (within["allowed"], within["reason"]) == (True, "within_quota")
        await credit(harness, 20)
        await use_up_the_quota(harness)
        # 10 tokens past the quota cost 20 credits at 2 a token: the wallet holds 20.
        paid = await check(harness, customer="ada", feature="ai.tokens", requested=10)
        assert (paid["allowed"], paid["reason"], paid["remaining"]) == (True, "wallet_pays", "0")
        short = await check(harness, customer="ada", feature="ai.tokens", requested=11)
        assert (short["allowed"], short["reason"]) == (False, "insufficient_balance")
        nobody = await check(
            harness, customer="nobody", feature="ai.tokens", requested=FREE_TOKENS + 1
        )
        assert (nobody["allowed"], nobody["reason"]) == (False, "insufficient_balance")
        assert (await balance(harness)).available == 20  # a check draws nothing
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def test_a_feature_without_a_wallet_is_exhausted_as_before(harness: Harness) -> None:
    await credit(harness, 1000)
    await harness.post(
        "/v1/entitlements/consume",
        {"customer": "ada", "feature": "ai.tokens", "amount": FREE_TOKENS, "idempotency_key": "k"},
    )
    answer = await check(harness, customer="ada", feature="ai.tokens", requested=1)
    assert (answer["allowed"], answer["reason"]) == (False, "quota_exhausted")


# A model dearer than the feature's 2 credits a token, beside o3's cheaper 0.5.
DEAR = O3_CREDITS + '\n    dear: {prompt: 1, completion: 1, credits: "3"}'


async def test_the_check_prices_a_models_credit_rate_as_consume_does(
    backend: str, database_url: str
) -> None:
    """At each step the check's answer is the consume's: allowed exactly when the
    consume that follows is paid, refused exactly when it is 402. The wallet is set at
    each cost's edge, so a check at any other rate than consume's would disagree."""
    harness = await paying(database_url, Enforcement.ENFORCE)
    try:
        await harness.apply_plans(wallet_plans().replace(O3_CREDITS, DEAR))
        await credit(harness, 10)
        await use_up_the_quota(harness)
        steps = [
            ("o3", 21, 11),  # 10.5 credits, rounded up: one more than the wallet holds
            ("o3", 20, 10),  # at 0.5 a token the wallet pays; at the feature's 2 it could not
            (None, 0, 0),  # top up 10
            ("gpt-4o", 6, 12),  # no rate of its own: the feature's 2 a token
            ("dear", 4, 12),  # at 3 a token the wallet cannot; at the feature's 2 it could
            ("dear", 3, 9),
            ("", 1, 2),  # no model: the feature's rate, one more than the 1 left
        ]
        for number, (model, tokens, cost) in enumerate(steps):
            if model is None:
                await credit(harness, 10, reference="top-up")
                continue
            properties = {"model": model} if model else {}
            held = (await balance(harness)).available
            asked = await check(
                harness,
                customer="ada",
                feature="ai.tokens",
                requested=tokens,
                properties=properties,
            )
            used = await consume(harness, f"step-{number}", tokens, properties=properties)
            if cost <= held:
                assert (asked["allowed"], asked["reason"]) == (True, "wallet_pays"), number
                assert used.status_code == 200, used.text
                assert used.json()["wallet"]["cost"] == cost
            else:
                assert (asked["allowed"], asked["reason"]) == (False, "insufficient_balance")
                assert assert_problem(used, 402, "insufficient_balance")["cost"] == cost
        assert (await balance(harness)).available == 10 + 10 - 10 - 9
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def test_only_a_metered_feature_takes_properties(harness: Harness) -> None:
    body = {"customer": "ada", "feature": "spaces.max", "current": 1}
    refused = await harness.post("/v1/entitlements/check", {**body, "properties": {"model": "o3"}})
    assert assert_problem(refused, 422, "invalid_input")["errors"][0]["pointer"] == "#/properties"
    assert (await harness.post("/v1/entitlements/check", body)).status_code == 200
