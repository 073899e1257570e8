"""Invoices and the wallet: wallet credit pays an invoice in part or in full (from the
receivable's point of view, a payment like any other), and a credit note gives paid
money back to the wallet instead of refunding it."""

from __future__ import annotations

import pytest

from tests.conftest import Harness, assert_problem
from tests.invoicing.helpers import (
    balances,
    customer_id,
    entries,
    open_invoice,
    transfers,
    verified,
)
from tests.wallets.helpers import balance, credit

pytestmark = pytest.mark.anyio


async def test_the_wallet_pays_an_invoice_in_part_then_in_full(harness: Harness) -> None:
    invoice = await open_invoice(harness, "ann")  # 29.00 USD
    owed = f"receivable:{await customer_id(harness, 'ann')}:USD"
    url = f"/v1/invoices/{invoice['id']}/payments"
    empty = await harness.post(url, {"source": "wallet", "allow_partial": True})
    assert_problem(empty, 402, "insufficient_balance")
    lot = await credit(harness, 1000, customer="ann", unit="USD")
    short = await harness.post(url, {"source": "wallet"})
    assert assert_problem(short, 402, "insufficient_balance")["shortfall"] == 1900
    part = await harness.post(url, {"source": "wallet", "allow_partial": True})
    assert part.status_code == 201, part.text
    assert (part.json()["status"], part.json()["paid_minor"], part.json()["due_minor"]) == (
        "open",
        1000,
        1900,
    )
    assert part.json()["payments"][0]["method"] == "wallet"
    assert (await balance(harness, "ann", "USD")).available == 0
    (recorded,) = await entries(harness, "PaymentRecorded")
    (spent,) = recorded["transfer_ids"]
    assert spent == f"wsp:{recorded['payment_id']}:0"
    assert (await transfers(harness, [spent]))[0][1:] == (f"wallet:{lot.id}", owed, 1000)

    await credit(harness, 5000, customer="ann", unit="USD", reference="top-up-2")
    rest = await harness.post(url, {"source": "wallet"})
    assert (rest.json()["status"], rest.json()["due_minor"]) == ("paid", 0)
    assert (await balance(harness, "ann", "USD")).available == 3100
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"], found["wallet_funding:USD"]) == (0, -2900, 6000)
    await verified(harness)


async def test_a_payment_from_the_wallet_takes_no_external_fields(harness: Harness) -> None:
    invoice = await open_invoice(harness, "bob")
    url = f"/v1/invoices/{invoice['id']}/payments"
    dated = await harness.post(url, {"source": "wallet", "paid_at": "2026-05-01T00:00:00Z"})
    assert assert_problem(dated, 422, "invalid_input")["errors"][0]["pointer"] == "#/paid_at"
    partial = await harness.post(url, {"allow_partial": True})
    assert_problem(partial, 422, "invalid_input")


async def test_a_credit_note_gives_what_was_paid_back_to_the_wallet(harness: Harness) -> None:
    invoice = await open_invoice(harness, "cat")
    owed = f"receivable:{await customer_id(harness, 'cat')}:USD"
    await harness.post(f"/v1/invoices/{invoice['id']}/payments", {"amount_minor": 2000})
    note = await harness.post(
        f"/v1/invoices/{invoice['id']}/credit-notes", {"reason": "churned", "refund_to": "wallet"}
    )
    assert note.status_code == 201, note.text
    assert (note.json()["refund_minor"], note.json()["refund_to"]) == (2000, "wallet")
    assert (await balance(harness, "cat", "USD")).available == 2000
    cn = note.json()["id"]
    (issued,) = await entries(harness, "CreditNoteIssued")
    assert issued["transfer_ids"][0] == f"{cn}:revenue"
    (to_wallet,) = [t for t in issued["transfer_ids"] if t.startswith("wcr:")]
    moved = (await transfers(harness, [to_wallet]))[0]
    assert (moved[1], moved[3]) == (owed, 2000)
    (credited,) = await entries(harness, "WalletCredited")
    assert (credited["source"], credited["reference"]) == ("credit_note", cn)
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"], found["cash:USD"]) == (0, 0, 2000)
    after = (await harness.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (after["status"], after["due_minor"], after["refunded_minor"]) == ("paid", 0, 2000)
    await verified(harness)
