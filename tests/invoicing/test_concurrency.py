"""Parallel clients pay and credit the same invoice, from outside, from the wallet and by
credit notes, some retrying with the same Idempotency-Key: each accepted request has one
effect, nothing is paid or credited past the invoice, and the ledger agrees with the
invoice to the minor unit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import Harness, postgresql_only
from tests.invoicing.helpers import balances, customer_id, entries, open_invoice, verified
from tests.invoicing.test_postings import legacy_invoice
from tests.wallets.helpers import balance, credit

pytestmark = pytest.mark.anyio


# Only PostgreSQL runs writers at once (SQLite queues them on one database lock): only
# there do the invoice's and the wallet's row locks decide who goes first.
@postgresql_only
async def test_parallel_payments_and_credit_notes_on_one_invoice(harness: Harness) -> None:
    invoice = await open_invoice(harness, "ann")  # 2900 USD
    owed = f"receivable:{await customer_id(harness, 'ann')}:USD"
    await credit(harness, 10_000, customer="ann", unit="USD")
    url = f"/v1/invoices/{invoice['id']}"
    requests: list[tuple[str, dict[str, Any], str]] = [
        ("payments", {"amount_minor": 700}, "ext-1"),
        ("payments", {"amount_minor": 700}, "ext-1"),  # a retry, at once
        ("payments", {"amount_minor": 600}, "ext-2"),
        ("payments", {"source": "wallet", "amount_minor": 800}, "wal-1"),
        ("payments", {"source": "wallet", "amount_minor": 800}, "wal-1"),
        ("payments", {"source": "wallet", "allow_partial": True}, "wal-2"),
        (
            "credit-notes",
            {"reason": "a", "lines": [{"position": 1, "amount_minor": 500}], "refund_to": "refund"},
            "cn-1",
        ),
        (
            "credit-notes",
            {"reason": "b", "lines": [{"position": 1, "amount_minor": 400}], "refund_to": "wallet"},
            "cn-2",
        ),
        (
            "credit-notes",
            {"reason": "b", "lines": [{"position": 1, "amount_minor": 400}], "refund_to": "wallet"},
            "cn-2",
        ),
    ]

    async def send(path: str, body: dict[str, Any], key: str) -> httpx.Response:
        headers = {**harness.admin, "Idempotency-Key": key}
        return await harness.post(f"{url}/{path}", body, headers=headers)

    answers = await asyncio.gather(*(send(*request) for request in requests))
    for answer in answers:
        assert answer.status_code in (200, 201, 402, 409, 422), answer.text
    done = (await harness.get(url)).json()
    notes = (await harness.get(f"{url}/credit-notes")).json()["credit_notes"]
    # Each key that was accepted had one effect, however often it was sent.
    accepted = {
        path: {
            key
            for (kind, _body, key), answer in zip(requests, answers, strict=True)
            if kind == path and answer.status_code == 201
        }
        for path in ("payments", "credit-notes")
    }
    assert (len(done["payments"]), len(notes)) == (
        len(accepted["payments"]),
        len(accepted["credit-notes"]),
    )
    assert accepted["payments"]  # the invoice took something
    recorded = [
        e for e in await entries(harness, "PaymentRecorded") if e["invoice_id"] == invoice["id"]
    ]
    assert sorted(e["payment_id"] for e in recorded) == sorted(p["id"] for p in done["payments"])
    paid = sum(p["amount_minor"] for p in done["payments"])
    credited = sum(n["total_minor"] for n in notes)
    refunded = sum(n["refund_minor"] for n in notes)
    assert (done["paid_minor"], done["credited_minor"], done["refunded_minor"]) == (
        paid,
        credited,
        refunded,
    )
    assert done["due_minor"] == 2900 - paid - credited + refunded >= 0
    assert done["status"] == ("paid" if done["due_minor"] == 0 else "open")
    # The ledger agrees with the invoice, to the minor unit.
    found = await balances(harness)
    from_wallet = sum(p["amount_minor"] for p in done["payments"] if p["method"] == "wallet")
    to_wallet = sum(n["refund_minor"] for n in notes if n["refund_to"] == "wallet")
    to_refund = sum(n["refund_minor"] for n in notes if n["refund_to"] == "refund")
    assert found[owed] == done["due_minor"]
    assert found.get("cash:USD", 0) == paid - from_wallet
    assert found.get("refunds_payable:USD", 0) == -to_refund
    assert found["revenue:USD"] == -(2900 - credited)
    assert (await balance(harness, "ann", "USD")).available == 10_000 - from_wallet + to_wallet
    await verified(harness)


@postgresql_only
async def test_parallel_first_payments_post_an_old_invoice_once(harness: Harness) -> None:
    invoice_id = await legacy_invoice(harness, "olga", "10.00")
    owed = f"receivable:{await customer_id(harness, 'olga')}:USD"
    answers = await asyncio.gather(
        *(
            harness.post(f"/v1/invoices/{invoice_id}/payments", {"amount_minor": 300})
            for _ in range(4)
        )
    )
    assert sorted(answer.status_code for answer in answers) == [201, 201, 201, 409]
    recorded = [
        e for e in await entries(harness, "PaymentRecorded") if e["invoice_id"] == invoice_id
    ]
    posting = [e for e in recorded if f"{invoice_id}:revenue" in e["transfer_ids"]]
    assert (len(recorded), len(posting)) == (3, 1)
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"], found["cash:USD"]) == (100, -1000, 900)
    await verified(harness)
