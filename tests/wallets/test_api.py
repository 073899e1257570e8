"""The wallets' HTTP API, as a product and an admin use it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import Harness, assert_problem
from tests.wallets.helpers import balance, credit, spend

pytestmark = pytest.mark.anyio


async def test_an_admin_grant_top_up_credits_at_once_and_replays(harness: Harness) -> None:
    body = {"customer_id": "ada", "unit": "credits", "amount": 500, "reference": "welcome"}
    first = await harness.post("/v1/wallets/top-ups", body)
    again = await harness.post("/v1/wallets/top-ups", body)

    assert first.status_code == 201, first.text
    assert again.json() == first.json()
    assert first.json()["status"] == "paid"
    assert (await balance(harness)).available == 500
    other = await harness.post("/v1/wallets/top-ups", {**body, "amount": 600})
    assert_problem(other, 409, "top_up_exists_with_different_fields")


async def test_an_idempotency_key_replays_a_top_up_without_a_reference(harness: Harness) -> None:
    body = {"customer_id": "ada", "unit": "credits", "amount": 300, "source": "promotion"}
    headers = {**harness.admin, "Idempotency-Key": "top-up-1"}
    first = await harness.post("/v1/wallets/top-ups", body, headers=headers)
    again = await harness.post("/v1/wallets/top-ups", body, headers=headers)

    assert first.status_code == 201, first.text
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert (await balance(harness)).available == 300


async def test_a_payment_top_up_is_credited_only_when_paid(harness: Harness) -> None:
    created = await harness.post(
        "/v1/wallets/top-ups",
        {
            "customer_id": "ada",
            "unit": "USD",
            "amount": 2000,
            "source": "payment",
            "reference": "order-1",
        },
    )
    assert created.status_code == 201, created.text
    top_up = created.json()
    assert top_up["status"] == "pending"
    assert (await balance(harness, unit="USD")).available == 0

    paid = await harness.post(
        f"/v1/wallets/top-ups/{top_up['id']}/mark-paid", {"payment_reference": "wire-42"}
    )
    again = await harness.post(
        f"/v1/wallets/top-ups/{top_up['id']}/mark-paid", {"payment_reference": "wire-42"}
    )

    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid"
    assert again.json() == paid.json()
    assert (await balance(harness, unit="USD")).available == 2000
    failed = await harness.post(
        f"/v1/wallets/top-ups/{top_up['id']}/mark-failed", {"reason": "bounced"}
    )
    assert_problem(failed, 409, "top_up_already_resolved")


async def test_a_failed_payment_credits_nothing(harness: Harness) -> None:
    created = await harness.post(
        "/v1/wallets/top-ups",
        {
            "customer_id": "ada",
            "unit": "USD",
            "amount": 2000,
            "source": "payment",
            "reference": "order-2",
        },
    )
    top_up = created.json()

    failed = await harness.post(
        f"/v1/wallets/top-ups/{top_up['id']}/mark-failed", {"reason": "card declined"}
    )

    assert failed.json()["status"] == "failed"
    assert failed.json()["failure"] == "card declined"
    paid = await harness.post(f"/v1/wallets/top-ups/{top_up['id']}/mark-paid")
    assert_problem(paid, 409, "top_up_already_resolved")
    assert (await balance(harness, unit="USD")).available == 0


async def test_the_check_says_whether_an_estimate_is_affordable(harness: Harness) -> None:
    await credit(harness, 100, reference="top")
    service = await harness.key("service")

    enough = await harness.post(
        "/v1/wallets/check",
        {"customer_id": "ada", "unit": "credits", "amount": 80},
        headers=service,
    )
    short = await harness.post(
        "/v1/wallets/check",
        {"customer_id": "ada", "unit": "credits", "amount": 130},
        headers=service,
    )

    assert enough.json() == {
        "allowed": True,
        "unit": "credits",
        "amount": 80,
        "available": 100,
        "shortfall": 0,
    }
    assert short.json() == {
        "allowed": False,
        "unit": "credits",
        "amount": 130,
        "available": 100,
        "shortfall": 30,
    }
    assert (await balance(harness)).available == 100


async def test_holds_through_the_api(harness: Harness) -> None:
    await credit(harness, 100, reference="top")
    service = await harness.key("service")
    body = {
        "hold_id": "run-7",
        "customer_id": "ada",
        "unit": "credits",
        "amount": 60,
        "timeout_s": 600,
    }

    created = await harness.post("/v1/wallets/holds", body, headers=service)
    too_big = await harness.post(
        "/v1/wallets/holds", {**body, "hold_id": "run-8", "amount": 41}, headers=service
    )
    settled = await harness.post("/v1/wallets/holds/run-7/settle", {"amount": 45}, headers=service)

    assert created.status_code == 201, created.text
    assert created.json()["status"] == "held"
    problem = assert_problem(too_big, 402, "insufficient_balance")
    assert (problem["balance"], problem["shortfall"]) == (40, 1)
    assert settled.json()["status"] == "settled"
    assert settled.json()["settled_amount"] == 45
    assert (await balance(harness)).available == 55
    released = await harness.post("/v1/wallets/holds/run-7/release", headers=service)
    assert_problem(released, 409, "hold_already_resolved")
    read = await harness.get("/v1/wallets/holds/run-7")
    assert read.json() == settled.json()


async def test_wallets_and_their_history(harness: Harness) -> None:
    await credit(harness, 100, reference="top")
    await credit(harness, 7, unit="USD", reference="usd")
    for n in range(3):
        harness.clock.advance(timedelta(seconds=1))
        await spend(harness, 10, f"use-{n}")

    listed = await harness.get("/v1/customers/ada/wallets")
    assert listed.status_code == 200, listed.text
    by_unit = {w["unit"]: w for w in listed.json()["wallets"]}
    assert by_unit["credits"]["available"] == 70
    assert by_unit["USD"]["available"] == 7
    wallet_id = by_unit["credits"]["id"]
    assert (await harness.get(f"/v1/wallets/{wallet_id}")).json() == by_unit["credits"]

    first = await harness.get(f"/v1/wallets/{wallet_id}/transactions", params={"limit": 2})
    page = first.json()
    rest = await harness.get(
        f"/v1/wallets/{wallet_id}/transactions", params={"cursor": page["next_cursor"]}
    )

    seen = page["transactions"] + rest.json()["transactions"]
    assert [t["transfer_id"] for t in seen] == [
        "wsp:use-2:0",
        "wsp:use-1:0",
        "wsp:use-0:0",
        seen[3]["transfer_id"],
    ]
    assert [(t["direction"], t["amount"]) for t in seen] == [
        ("out", 10),
        ("out", 10),
        ("out", 10),
        ("in", 100),
    ]
    assert rest.json()["next_cursor"] is None


async def test_bad_input_gets_stable_problem_codes(harness: Harness) -> None:
    def top_up(**fields: object) -> dict[str, object]:
        return {"customer_id": "ada", "unit": "credits", "amount": 10, **fields}

    assert_problem(
        await harness.post("/v1/wallets/top-ups", top_up(unit="XYZ")), 422, "unknown_unit"
    )
    assert_problem(
        await harness.post("/v1/wallets/top-ups", top_up(unit="Credits!")), 422, "unknown_unit"
    )
    assert_problem(
        await harness.post("/v1/wallets/top-ups", top_up(amount=0)), 422, "amount_not_positive"
    )
    assert_problem(
        await harness.post("/v1/wallets/top-ups", top_up(amount=-5)), 422, "amount_not_positive"
    )
    assert_problem(
        await harness.post("/v1/wallets/check", top_up(amount=0)), 422, "amount_not_positive"
    )
    hold = {"hold_id": "h", "customer_id": "ada", "unit": "credits", "amount": 5}
    assert_problem(await harness.post("/v1/wallets/holds", hold), 402, "insufficient_balance")
    assert_problem(await harness.get("/v1/wallets/holds/nope"), 404, "hold_not_found")
    assert_problem(
        await harness.get(f"/v1/wallets/wal_{'a' * 26}/transactions"), 404, "wallet_not_found"
    )


async def test_a_cursor_we_did_not_issue_is_refused(harness: Harness) -> None:
    lot = await credit(harness, 5, reference="top")
    path = f"/v1/wallets/{lot.wallet_id}/transactions"

    for cursor in ("!!", "bm90IGEgY3Vyc29y", "MjAyNi0wNi0wMVQxMjowMDowMHx4"):
        # garbage, "not a cursor", and an instant without a time zone
        assert_problem(await harness.get(path, params={"cursor": cursor}), 422, "invalid_input")
