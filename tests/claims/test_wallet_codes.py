"""Claim codes that add wallet credit: alone, or with a plan; once per redemption,
however often it is retried."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.claims.steps import at, create_batch, events_of, redeem
from tests.conftest import START, Harness, assert_problem
from tests.wallets.helpers import balance

pytestmark = pytest.mark.anyio

CREDIT = {"unit": "credits", "amount": 500, "expires_in_days": 30, "priority": 10}


async def test_a_credit_code_adds_a_lot_to_the_wallet_once(harness: Harness) -> None:
    batch = await create_batch(harness, plan=None, wallet_credit=CREDIT)
    assert batch["wallet_credit"] == CREDIT

    first = await redeem(harness, "ada", batch["codes"][0])
    again = await redeem(harness, "ada", batch["codes"][0])

    assert first.status_code == 200, first.text
    body = first.json()
    assert body["grant"] is None
    lot = body["wallet_credit"]
    assert (lot["unit"], lot["amount"], lot["priority"]) == ("credits", 500, 10)
    assert at(lot["expires_at"]) == START + timedelta(days=30)
    assert again.json()["replayed"] is True
    assert again.json()["wallet_credit"] == lot
    assert (await balance(harness)).available == 500
    redeemed = await events_of(harness, type="ClaimCodeRedeemed")
    assert [e["data"]["transfer_ids"] for e in redeemed] == [[lot["transfer_id"]]]


async def test_a_code_can_grant_a_plan_and_credit(harness: Harness) -> None:
    batch = await create_batch(harness, wallet_credit={"unit": "USD", "amount": 1000})

    body = (await redeem(harness, "bob", batch["codes"][0])).json()

    assert body["grant"]["plan"] == "beta_tester"
    assert body["wallet_credit"]["amount"] == 1000
    assert body["wallet_credit"]["expires_at"] is None
    assert (await balance(harness, "bob", "USD")).available == 1000


async def test_a_credit_code_with_bad_credit_is_refused(harness: Harness) -> None:
    async def refused(status: int, code: str, **credit: Any) -> None:
        body = {"count": 1, "duration": "lifetime", "wallet_credit": {**CREDIT, **credit}}
        response = await harness.post("/v1/claims/batches", body)
        assert_problem(response, status, code)

    await refused(422, "unknown_unit", unit="XYZ")
    await refused(422, "amount_not_positive", amount=0)
    nothing = await harness.post("/v1/claims/batches", {"count": 1, "duration": "lifetime"})
    assert_problem(nothing, 422, "invalid_input")
