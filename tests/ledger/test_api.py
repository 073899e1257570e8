"""The ledger's HTTP API: accounts (idempotent by code), transfers through the group
commit (one, or a linked batch), reads with cursors, and each refusal as problem+json
with the ledger's stable code."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import Harness, assert_problem

pytestmark = pytest.mark.anyio

WALLET: dict[str, Any] = {
    "code": "wallet:ada",
    "type": "liability",
    "unit": "credits",
    "rule": "debits_must_not_exceed_credits",
}


async def make_account(harness: Harness, **fields: Any) -> dict[str, Any]:
    response = await harness.post("/v1/ledger/accounts", fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_account_is_created_once_per_code_and_read_back(harness: Harness) -> None:
    made = await make_account(harness, **WALLET)
    assert (made["code"], made["unit"], made["debits_posted"]) == ("wallet:ada", "credits", 0)
    assert await make_account(harness, **WALLET) == made
    other = await harness.post("/v1/ledger/accounts", {**WALLET, "rule": None})
    assert_problem(other, 409, "account_exists_with_different_fields")
    assert_problem(
        await harness.post("/v1/ledger/accounts", {**WALLET, "code": "x", "unit": "Credits!"}),
        422,
        "invalid_account",
    )
    assert (await harness.get(f"/v1/ledger/accounts/{made['id']}")).json() == made
    assert_problem(await harness.get("/v1/ledger/accounts/lac_nope"), 404, "account_not_found")
    found = (await harness.get("/v1/ledger/accounts", params={"code": "wallet:ada"})).json()
    assert found == {"accounts": [made], "next_cursor": None}
    none = (await harness.get("/v1/ledger/accounts", params={"code": "nobody"})).json()
    assert none == {"accounts": [], "next_cursor": None}


async def test_accounts_are_listed_a_page_at_a_time(harness: Harness) -> None:
    made = [await make_account(harness, code=f"a{n}", type="asset", unit="USD") for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await harness.get("/v1/ledger/accounts", params=params)).json()
        seen += [found["id"] for found in page["accounts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(found["id"] for found in made)
    bad = await harness.get("/v1/ledger/accounts", params={"cursor": "_w"})  # not UTF-8
    assert_problem(bad, 422, "invalid_input")


async def test_transfers_one_or_linked_and_their_refusals(harness: Harness) -> None:
    funding = await make_account(harness, code="funding", type="equity", unit="credits")
    wallet = await make_account(harness, **WALLET)
    usage = await make_account(harness, code="usage", type="revenue", unit="credits")
    dollars = await make_account(harness, code="cash", type="asset", unit="USD")

    def transfer(id: str, debit: dict[str, Any], credit: dict[str, Any], amount: Any) -> Any:
        return {
            "id": id,
            "debit_account_id": debit["id"],
            "credit_account_id": credit["id"],
            "amount": amount,
        }

    top_up = {**transfer("top-up", funding, wallet, 100), "code": "top_up", "metadata": {"n": 1}}
    made = await harness.post("/v1/ledger/transfers", top_up)
    assert made.status_code == 200, made.text
    assert made.json()["kind"] == "posted"
    assert made.json()["metadata"] == {"n": 1}
    # A retry answers the stored transfer; the same id with other fields is a 409.
    assert (await harness.post("/v1/ledger/transfers", top_up)).json() == made.json()
    assert_problem(
        await harness.post("/v1/ledger/transfers", {**top_up, "amount": 101}),
        409,
        "transfer_exists_with_different_fields",
    )
    # Linked: all or nothing; the refusal names the transfer.
    linked = {
        "transfers": [
            transfer("spend-1", wallet, usage, 60),
            transfer("spend-2", wallet, usage, 60),
        ]
    }
    refused = assert_problem(
        await harness.post("/v1/ledger/transfers", linked), 409, "exceeds_credits"
    )
    assert (refused["index"], refused["transfer_id"]) == (1, "spend-2")
    linked["transfers"][1]["amount"] = 40
    both = await harness.post("/v1/ledger/transfers", linked)
    assert [t["id"] for t in both.json()["transfers"]] == ["spend-1", "spend-2"]
    now = (await harness.get(f"/v1/ledger/accounts/{wallet['id']}")).json()
    assert (now["debits_posted"], now["credits_posted"]) == (100, 100)
    for body, status, code in (
        (transfer("x", wallet, dollars, 1), 422, "ledger_units_differ"),
        (transfer("x", funding, wallet, 0), 422, "amount_not_positive"),
        (transfer("x", funding, wallet, -5), 422, "amount_not_positive"),
        (
            {**transfer("x", funding, wallet, 1), "debit_account_id": "lac_nope"},
            404,
            "account_not_found",
        ),
        (transfer("x", wallet, usage, 1), 409, "exceeds_credits"),
        (transfer("bad id!", funding, wallet, 1), 422, "invalid_transfer"),
        ({"transfers": [transfer("x", funding, wallet, 1)], "id": "y"}, 422, "invalid_transfer"),
        ({"code": "nothing"}, 422, "invalid_transfer"),
        ({"id": "x", "amount": "12"}, 422, "invalid_input"),
        ({"id": "p-post", "post_pending_id": "nope"}, 404, "pending_transfer_not_found"),
    ):
        assert_problem(await harness.post("/v1/ledger/transfers", body), status, code)
    assert_problem(await harness.get("/v1/ledger/transfers/x"), 404, "transfer_not_found")
    # Two-phase through the API.
    hold = {**transfer("hold", funding, wallet, 30), "pending": True, "timeout_s": 600}
    assert (await harness.post("/v1/ledger/transfers", hold)).json()["kind"] == "pending"
    post = await harness.post(
        "/v1/ledger/transfers", {"id": "hold-post", "post_pending_id": "hold"}
    )
    assert (post.json()["kind"], post.json()["amount"]) == ("post", 30)
    got = await harness.get("/v1/ledger/transfers/hold-post")
    assert got.json() == post.json()


async def test_an_accounts_transfers_are_listed_oldest_first(harness: Harness) -> None:
    funding = await make_account(harness, code="funding", type="equity", unit="credits")
    wallet = await make_account(harness, **WALLET)
    for n in range(5):
        harness.clock.advance(timedelta(seconds=1))
        body = {
            "id": f"t{4 - n}",  # ids against the order of time: time orders, then id
            "debit_account_id": funding["id"],
            "credit_account_id": wallet["id"],
            "amount": n + 1,
        }
        assert (await harness.post("/v1/ledger/transfers", body)).status_code == 200
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await harness.get(f"/v1/ledger/accounts/{wallet['id']}/transfers", params=params)
        seen += [t["id"] for t in page.json()["transfers"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["t4", "t3", "t2", "t1", "t0"]
    made_up = {"cursor": "bm9uc2Vuc2U"}  # "nonsense": no time, no id
    bad = await harness.get(f"/v1/ledger/accounts/{wallet['id']}/transfers", params=made_up)
    assert_problem(bad, 422, "invalid_input")
    missing = await harness.get("/v1/ledger/accounts/lac_nope/transfers")
    assert_problem(missing, 404, "account_not_found")


async def test_concurrent_posts_are_grouped_and_each_answered(harness: Harness) -> None:
    funding = await make_account(harness, code="funding", type="equity", unit="credits")
    wallet = await make_account(harness, **WALLET)
    usage = await make_account(harness, code="usage", type="revenue", unit="credits")
    fund = {"id": "fund", "debit_account_id": funding["id"], "credit_account_id": wallet["id"]}
    await harness.post("/v1/ledger/transfers", {**fund, "amount": 10})

    async def spend(n: int) -> Any:
        body = {
            "id": f"spend-{n}",
            "debit_account_id": wallet["id"],
            "credit_account_id": usage["id"],
            "amount": 1,
        }
        return await harness.post("/v1/ledger/transfers", body)

    answers = await asyncio.gather(*(spend(n) for n in range(16)))
    ok = [answer for answer in answers if answer.status_code == 200]
    assert len(ok) == 10
    for answer in answers:
        if answer.status_code != 200:
            assert_problem(answer, 409, "exceeds_credits")
    now = (await harness.get(f"/v1/ledger/accounts/{wallet['id']}")).json()
    assert (now["debits_posted"], now["credits_posted"]) == (10, 10)


async def test_only_admin_keys_move_money(harness: Harness) -> None:
    readonly = await harness.key("readonly")
    response = await harness.post("/v1/ledger/accounts", {**WALLET}, headers=readonly)
    assert_problem(response, 403, "insufficient_scope")
    response = await harness.post("/v1/ledger/transfers", {"id": "x"}, headers=readonly)
    assert_problem(response, 403, "insufficient_scope")
    assert (await harness.get("/v1/ledger/accounts", headers=readonly)).status_code == 200
