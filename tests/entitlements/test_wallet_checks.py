"""The check API on a feature paid from a wallet: past the quota, allowed while the
wallet holds the overage's cost, and it draws nothing."""

from __future__ import annotations

import pytest

from billfold.catalog.quotas import Enforcement
from tests.conftest import Harness
from tests.factories import check
from tests.metering.test_wallet_overage import FREE_TOKENS, paying, use_up_the_quota
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
