"""Settling a succeeded payment through the API: the fee and the shares in platform mode,
all to revenue in self-hosted mode, in one linked ledger batch, once per id."""

from __future__ import annotations

import pytest

from tests.conftest import Harness, assert_problem
from tests.settlement.helpers import assert_ledger_verifies, net, put_split, settle

pytestmark = pytest.mark.anyio

TYPES = ["platform_subscription", "private_app_purchase", "investor_funding", "public_app_purchase"]


async def test_a_public_app_purchase_pays_the_fee_and_splits_the_rest(platform: Harness) -> None:
    assert (await put_split(platform, "chess")).status_code == 200
    response = await settle(
        platform, "pay_1", "public_app_purchase", 10_000, app_id="chess", payer="u1"
    )
    assert response.status_code == 201, response.text
    made = response.json()
    # 3.5% of 100.00 is 3.50; 96.50 split 50/30/20
    assert (made["fee"], made["fee_percent"], made["split_version"]) == (350, "3.5", 1)
    assert [(p["role"], p["account"], p["amount"]) for p in made["parts"]] == [
        ("fee", "platform_fee:USD", 350),
        ("creator", "payable:ada:USD", 4825),
        ("investor", "payable:ivy:USD", 2895),
        ("investor", "payable:ole:USD", 1930),
    ]
    assert made["transfer_ids"] == [
        "stl:pay_1:in",
        "stl:pay_1:fee",
        "stl:pay_1:payable:ada",
        "stl:pay_1:payable:ivy",
        "stl:pay_1:payable:ole",
    ]
    assert await net(platform, "cash:USD") == -10_000
    assert await net(platform, "settlement:USD") == 0
    assert await net(platform, "platform_fee:USD") == 350
    assert await net(platform, "payable:ada:USD") == 4825
    assert await net(platform, "payable:ivy:USD") == 2895
    assert await net(platform, "revenue:USD") is None
    events = (await platform.get("/v1/audit/events", params={"type": "SettlementSettled"})).json()
    (event,) = events["events"]
    assert event["data"]["transfer_ids"] == made["transfer_ids"]
    assert event["data"]["settlement_id"] == "pay_1"
    assert (await platform.get("/v1/settlements/pay_1")).json() == made
    await assert_ledger_verifies(platform)


@pytest.mark.parametrize("type", ["private_app_purchase", "investor_funding"])
async def test_a_private_purchase_or_funding_pays_the_fee_and_the_creator(
    platform: Harness, type: str
) -> None:
    await put_split(platform, "notes")
    made = (await settle(platform, "p", type, 999, app_id="notes")).json()
    # 3.5% of 999 is 34.965 -> 35; the creator gets the rest, investors nothing
    assert [(p["role"], p["account"], p["amount"]) for p in made["parts"]] == [
        ("fee", "platform_fee:USD", 35),
        ("creator", "payable:ada:USD", 964),
    ]
    assert await net(platform, "payable:ivy:USD") is None
    await assert_ledger_verifies(platform)


async def test_a_platform_subscription_is_all_the_platforms_revenue(platform: Harness) -> None:
    made = (await settle(platform, "sub-1", "platform_subscription", 2900)).json()
    assert (made["fee"], made["fee_percent"], made["split_version"]) == (0, None, None)
    assert [(p["role"], p["amount"]) for p in made["parts"]] == [("revenue", 2900)]
    assert made["transfer_ids"] == ["stl:sub-1:in", "stl:sub-1:revenue"]
    assert await net(platform, "revenue:USD") == 2900


@pytest.mark.parametrize("type", TYPES)
async def test_self_hosted_never_applies_a_fee_or_a_split(harness: Harness, type: str) -> None:
    assert harness.settings.mode == "self-hosted"
    await put_split(harness, "chess")  # a split table exists, and is still not applied
    response = await settle(harness, "s-1", type, 10_001, app_id="chess")
    assert response.status_code == 201, response.text
    made = response.json()
    assert (made["mode"], made["fee"], made["fee_percent"], made["split_version"]) == (
        "self-hosted",
        0,
        None,
        None,
    )
    assert [(p["role"], p["account"], p["amount"]) for p in made["parts"]] == [
        ("revenue", "revenue:USD", 10_001)
    ]
    assert await net(harness, "revenue:USD") == 10_001
    assert await net(harness, "platform_fee:USD") is None
    assert await net(harness, "payable:ada:USD") is None
    await assert_ledger_verifies(harness)


async def test_the_same_id_answers_the_same_and_other_fields_are_a_conflict(
    platform: Harness,
) -> None:
    await put_split(platform, "chess")
    first = await settle(platform, "p1", "public_app_purchase", 5000, app_id="chess")
    again = await settle(platform, "p1", "public_app_purchase", 5000, app_id="chess")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    # a new split table version does not change what was settled
    await put_split(platform, "chess", [("ada", "creator", "100")])
    assert (await settle(platform, "p1", "public_app_purchase", 5000, app_id="chess")).json() == (
        first.json()
    )
    other = await settle(platform, "p1", "public_app_purchase", 5001, app_id="chess")
    body = assert_problem(other, 409, "settlement_exists_with_different_fields")
    assert body["fields"] == ["amount"]
    assert await net(platform, "cash:USD") == -5000
    events = (await platform.get("/v1/audit/events", params={"type": "SettlementSettled"})).json()
    assert len(events["events"]) == 1


async def test_bad_settlements_are_refused_with_their_codes(platform: Harness) -> None:
    cases = [
        ({"app_id": None, "type": "public_app_purchase"}, 422, "app_id_required"),
        ({"app_id": "nope"}, 404, "split_table_not_found"),
        ({"amount": 0}, 422, "amount_not_positive"),
        ({"amount": -5}, 422, "amount_not_positive"),
        ({"amount": 2**63}, 422, "amount_not_positive"),
        ({"currency": "XXY"}, 422, "unknown_currency"),
        ({"currency": "usd"}, 422, "invalid_settlement"),
        ({"type": "gift"}, 422, "invalid_settlement"),
        ({"id": "has:colon"}, 422, "invalid_settlement"),
        ({"app_id": "a/b"}, 422, "invalid_settlement"),
        ({"amount": 1.5}, 422, "invalid_input"),
    ]
    for change, status, code in cases:
        body = {
            "id": "x1",
            "type": "private_app_purchase",
            "amount": 100,
            "currency": "USD",
            "app_id": "chess",
            **change,
        }
        assert_problem(await platform.post("/v1/settlements", body), status, code)
    assert_problem(await platform.get("/v1/settlements/x1"), 404, "settlement_not_found")
