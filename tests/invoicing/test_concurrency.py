"""Parallel clients pay, credit and write off the same invoice, from outside, from the
wallet and by credit notes, some retrying with the same Idempotency-Key: each accepted
request has one effect, nothing is paid or credited past the invoice, it is written off
once, and the ledger agrees with the invoice to the minor unit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from billfold.ledger import repository as ledger_rows
from tests.conftest import Harness, postgresql_only
from tests.invoicing.helpers import (
    balances,
    customer_id,
    entries,
    open_invoice,
    transfers,
    verified,
)
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


@postgresql_only
async def test_a_write_off_racing_payments_and_credit_notes_keeps_the_books(
    harness: Harness,
) -> None:
    invoice = await open_invoice(harness, "ivy")  # 2900 USD
    owed = f"receivable:{await customer_id(harness, 'ivy')}:USD"
    await credit(harness, 10_000, customer="ivy", unit="USD")
    url = f"/v1/invoices/{invoice['id']}"
    requests: list[tuple[str, dict[str, Any] | None, str | None]] = [
        ("payments", {"amount_minor": 700}, "ext-1"),
        ("payments", {"amount_minor": 500}, "ext-2"),
        ("mark-uncollectible", None, None),
        ("payments", {"source": "wallet", "amount_minor": 600}, "wal-1"),
        ("mark-uncollectible", None, None),  # a second admin, at once
        (
            "credit-notes",
            {"reason": "a", "lines": [{"position": 1, "amount_minor": 400}], "refund_to": "refund"},
            "cn-1",
        ),
        ("payments", {"amount_minor": 300}, "ext-3"),
        ("mark-uncollectible", None, None),
    ]

    async def send(path: str, body: dict[str, Any] | None, key: str | None) -> httpx.Response:
        headers = {**harness.admin, **({"Idempotency-Key": key} if key else {})}
        return await harness.post(f"{url}/{path}", body, headers=headers)

    answers = await asyncio.gather(*(send(*request) for request in requests))
    for answer in answers:
        assert answer.status_code in (200, 201), answer.text  # 2900 covers them all
    done = (await harness.get(url)).json()
    notes = (await harness.get(f"{url}/credit-notes")).json()["credit_notes"]
    assert done["status"] == "uncollectible"
    assert (len(done["payments"]), len(notes)) == (4, 1)
    assert done["due_minor"] == 2900 - 700 - 500 - 600 - 400 - 300 == 400
    # Written off once, for what was due when the first mark got the invoice's lock.
    (entry,) = [
        e
        for e in await entries(harness, "InvoiceMarkedUncollectible")
        if e["invoice_id"] == invoice["id"]
    ]
    write_off = f"{invoice['id']}:write_off"
    assert entry["transfer_ids"] == [write_off]
    (posted,) = await transfers(harness, [write_off])
    assert posted[1:3] == ("bad_debt:USD", owed)
    # Each payment or credit after it took back what it settled; before it, nothing.
    ids = [f"{p['id']}:recovery" for p in done["payments"]] + [f"{notes[0]['id']}:recovery"]
    async with harness.database.transaction(write=False) as session:
        stored = {
            row.id: int(row.amount)
            for row in await ledger_rows.transfers_by_ids(session, harness.tenant_id, ids)
        }
    assert posted[3] - sum(stored.values()) == done["due_minor"]
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"]) == (0, done["due_minor"])
    assert found["cash:USD"] == 700 + 500 + 300
    assert found["revenue:USD"] == -(2900 - 400)
    assert (await balance(harness, "ivy", "USD")).available == 10_000 - 600
    await verified(harness)


@postgresql_only
async def test_a_write_off_racing_the_payment_in_full_leaves_nothing_written_off(
    harness: Harness,
) -> None:
    invoice = await open_invoice(harness, "jay")
    owed = f"receivable:{await customer_id(harness, 'jay')}:USD"
    url = f"/v1/invoices/{invoice['id']}"
    answers = await asyncio.gather(
        harness.post(f"{url}/mark-uncollectible"),
        harness.post(f"{url}/payments"),
        harness.post(f"{url}/mark-uncollectible"),
    )
    marks = [answers[i].status_code for i in (0, 2)]
    assert answers[1].status_code == 201, answers[1].text
    # A mark after the payment finds it paid (409); one before it writes it all off, and
    # the payment takes it all back.
    assert set(marks) <= {200, 409}, [a.text for a in answers]
    done = (await harness.get(url)).json()
    assert (done["status"], done["due_minor"]) == ("paid", 0)
    (recorded,) = [
        e for e in await entries(harness, "PaymentRecorded") if e["invoice_id"] == invoice["id"]
    ]
    pay = recorded["payment_id"]
    if 200 in marks:
        assert recorded["transfer_ids"] == [f"{pay}:recovery", f"{pay}:cash"]
        assert (await transfers(harness, [f"{invoice['id']}:write_off"]))[0][3] == 2900
    else:
        assert recorded["transfer_ids"] == [f"{pay}:cash"]
    found = await balances(harness)
    assert (found[owed], found.get("bad_debt:USD", 0), found["cash:USD"]) == (0, 0, 2900)
    await verified(harness)
