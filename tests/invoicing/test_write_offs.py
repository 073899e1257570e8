"""Writing an invoice off (decision 0046): what is still due moves from the receivable to
bad debt, once however often it is marked; a later payment (manual or from the wallet),
a credit note or a void takes what it settles back from bad debt first, so the books end
with cash in and less bad debt, and the receivable of an uncollectible invoice nets to
zero. Invoices marked before write-offs posted are written off the first time they are
touched again."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from billfold.invoicing.tables import invoices
from tests.conftest import Harness, assert_problem
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


async def written_off(harness: Harness, invoice_id: str) -> dict[str, Any]:
    answer = await harness.post(f"/v1/invoices/{invoice_id}/mark-uncollectible")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "uncollectible"
    return dict(answer.json())


async def marked(harness: Harness, invoice_id: str) -> list[dict[str, Any]]:
    found = await entries(harness, "InvoiceMarkedUncollectible")
    return [entry for entry in found if entry["invoice_id"] == invoice_id]


async def test_a_write_off_posts_what_is_left_due_to_bad_debt_once(harness: Harness) -> None:
    invoice = await open_invoice(harness, "ann")  # 29.00 USD
    owed = f"receivable:{await customer_id(harness, 'ann')}:USD"
    await harness.post(f"/v1/invoices/{invoice['id']}/payments", {"amount_minor": 900})
    done = await written_off(harness, invoice["id"])
    assert done["due_minor"] == 2000  # still due: a later payment settles it
    write_off = f"{invoice['id']}:write_off"
    assert await transfers(harness, [write_off]) == [(write_off, "bad_debt:USD", owed, 2000)]
    (entry,) = await marked(harness, invoice["id"])
    assert entry["transfer_ids"] == [write_off]
    assert (entry["written_off_minor"], entry["currency"]) == (2000, "USD")
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["cash:USD"]) == (0, 2000, 900)

    again = await harness.post(f"/v1/invoices/{invoice['id']}/mark-uncollectible")
    assert again.json() == done  # a replay: nothing posted, nothing recorded twice
    assert len(await marked(harness, invoice["id"])) == 1
    assert await balances(harness) == found
    await verified(harness)


async def test_only_an_open_invoice_is_written_off(harness: Harness) -> None:
    invoice = await open_invoice(harness, "bob")
    await harness.post(f"/v1/invoices/{invoice['id']}/payments")
    refused = await harness.post(f"/v1/invoices/{invoice['id']}/mark-uncollectible")
    assert assert_problem(refused, 409, "invoice_status_conflict")["current_status"] == "paid"
    assert "bad_debt:USD" not in await balances(harness)


async def test_a_later_payment_takes_what_it_pays_back_from_bad_debt(harness: Harness) -> None:
    invoice = await open_invoice(harness, "cat")
    owed = f"receivable:{await customer_id(harness, 'cat')}:USD"
    await written_off(harness, invoice["id"])
    url = f"/v1/invoices/{invoice['id']}/payments"
    part = await harness.post(url, {"amount_minor": 1000})
    assert part.status_code == 201, part.text
    assert (part.json()["status"], part.json()["due_minor"]) == ("uncollectible", 1900)
    (first,) = await entries(harness, "PaymentRecorded")
    pay = first["payment_id"]
    assert first["transfer_ids"] == [f"{pay}:recovery", f"{pay}:cash"]
    assert await transfers(harness, first["transfer_ids"]) == [
        (f"{pay}:recovery", owed, "bad_debt:USD", 1000),
        (f"{pay}:cash", "cash:USD", owed, 1000),
    ]
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["cash:USD"]) == (0, 1900, 1000)

    rest = await harness.post(url)
    assert (rest.json()["status"], rest.json()["due_minor"]) == ("paid", 0)
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["cash:USD"]) == (0, 0, 2900)
    assert found["revenue:USD"] == -2900
    await verified(harness)


async def test_the_wallet_pays_a_written_off_invoice(harness: Harness) -> None:
    invoice = await open_invoice(harness, "dan")
    owed = f"receivable:{await customer_id(harness, 'dan')}:USD"
    await written_off(harness, invoice["id"])
    lot = await credit(harness, 1200, customer="dan", unit="USD")
    url = f"/v1/invoices/{invoice['id']}/payments"
    paid = await harness.post(url, {"source": "wallet", "allow_partial": True})
    assert paid.status_code == 201, paid.text
    assert (paid.json()["status"], paid.json()["due_minor"]) == ("uncollectible", 1700)
    (recorded,) = await entries(harness, "PaymentRecorded")
    pay = recorded["payment_id"]
    assert recorded["transfer_ids"] == [f"wsp:{pay}:0", f"{pay}:recovery"]
    assert await transfers(harness, recorded["transfer_ids"]) == [
        (f"wsp:{pay}:0", f"wallet:{lot.id}", owed, 1200),
        (f"{pay}:recovery", owed, "bad_debt:USD", 1200),
    ]
    assert (await balance(harness, "dan", "USD")).available == 0
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"]) == (0, 1700)
    await verified(harness)


async def test_credit_notes_on_a_written_off_invoice_take_back_bad_debt_not_more(
    harness: Harness,
) -> None:
    invoice = await open_invoice(harness, "eve")
    owed = f"receivable:{await customer_id(harness, 'eve')}:USD"
    url = f"/v1/invoices/{invoice['id']}"
    await harness.post(f"{url}/payments", {"amount_minor": 500})
    await written_off(harness, invoice["id"])  # 2400 to bad debt
    note = await harness.post(
        f"{url}/credit-notes", {"reason": "x", "lines": [{"position": 1, "amount_minor": 1000}]}
    )
    assert note.status_code == 201, note.text
    cn = note.json()["id"]
    (issued,) = await entries(harness, "CreditNoteIssued")
    assert issued["transfer_ids"] == [f"{cn}:recovery", f"{cn}:revenue"]
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["revenue:USD"]) == (0, 1400, -1900)
    # The rest credited, beyond what is due: 1400 taken back, the 500 paid refunded.
    last = await harness.post(f"{url}/credit-notes", {"reason": "y", "refund_to": "refund"})
    assert (last.json()["total_minor"], last.json()["refund_minor"]) == (1900, 500)
    after = (await harness.get(url)).json()
    assert (after["status"], after["due_minor"]) == ("paid", 0)
    (recovery,) = await transfers(harness, [f"{last.json()['id']}:recovery"])
    assert recovery[1:] == (owed, "bad_debt:USD", 1400)
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["revenue:USD"]) == (0, 0, 0)
    assert (found["cash:USD"], found["refunds_payable:USD"]) == (500, -500)
    await verified(harness)


async def test_a_void_of_a_written_off_invoice_takes_it_all_back(harness: Harness) -> None:
    invoice = await open_invoice(harness, "fay")
    owed = f"receivable:{await customer_id(harness, 'fay')}:USD"
    await written_off(harness, invoice["id"])
    voided = await harness.post(f"/v1/invoices/{invoice['id']}/void", {"reason": "duplicate"})
    assert voided.json()["status"] == "void"
    (entry,) = await entries(harness, "InvoiceVoided")
    inv = invoice["id"]
    assert entry["transfer_ids"] == [f"{inv}:void:recovery", f"{inv}:void:revenue"]
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["revenue:USD"]) == (0, 0, 0)
    await verified(harness)


async def mark_as_before(harness: Harness, invoice_id: str) -> None:
    """Mark the invoice uncollectible as before write-offs posted: the status only."""
    async with harness.database.transaction() as session:
        await session.execute(
            update(invoices).where(invoices.c.id == invoice_id).values(status="uncollectible")
        )


async def test_an_invoice_marked_before_write_offs_is_written_off_when_marked_again(
    harness: Harness,
) -> None:
    invoice = await open_invoice(harness, "gus")
    owed = f"receivable:{await customer_id(harness, 'gus')}:USD"
    await mark_as_before(harness, invoice["id"])
    assert (await balances(harness))[owed] == 2900  # left receivable
    await written_off(harness, invoice["id"])
    (entry,) = await marked(harness, invoice["id"])
    assert entry["transfer_ids"] == [f"{invoice['id']}:write_off"]
    await written_off(harness, invoice["id"])  # and only once
    assert len(await marked(harness, invoice["id"])) == 1
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"]) == (0, 2900)
    await verified(harness)


async def test_an_invoice_marked_before_write_offs_is_written_off_when_paid(
    harness: Harness,
) -> None:
    invoice = await open_invoice(harness, "hal")
    owed = f"receivable:{await customer_id(harness, 'hal')}:USD"
    await mark_as_before(harness, invoice["id"])
    paid = await harness.post(f"/v1/invoices/{invoice['id']}/payments", {"amount_minor": 400})
    assert paid.status_code == 201, paid.text
    (recorded,) = await entries(harness, "PaymentRecorded")
    pay = recorded["payment_id"]
    assert recorded["transfer_ids"] == [
        f"{invoice['id']}:write_off",
        f"{pay}:recovery",
        f"{pay}:cash",
    ]
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["cash:USD"]) == (0, 2500, 400)
    await verified(harness)


async def test_a_void_of_an_invoice_marked_before_write_offs_takes_nothing_back(
    harness: Harness,
) -> None:
    invoice = await open_invoice(harness, "ida")
    owed = f"receivable:{await customer_id(harness, 'ida')}:USD"
    await mark_as_before(harness, invoice["id"])
    await harness.post(f"/v1/invoices/{invoice['id']}/void", {"reason": "x"})
    (entry,) = await entries(harness, "InvoiceVoided")
    assert entry["transfer_ids"] == [f"{invoice['id']}:void:revenue"]
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"]) == (0, 0)
    assert "bad_debt:USD" not in found
    await verified(harness)


async def test_an_invoice_never_posted_is_posted_and_written_off_at_once(
    harness: Harness,
) -> None:
    invoice_id = await legacy_invoice(harness, "jon", "12.34")
    owed = f"receivable:{await customer_id(harness, 'jon')}:USD"
    done = await written_off(harness, invoice_id)
    assert done["posted_at"] is not None
    (entry,) = await marked(harness, invoice_id)
    assert entry["transfer_ids"] == [f"{invoice_id}:revenue", f"{invoice_id}:write_off"]
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"], found["bad_debt:USD"]) == (0, -1234, 1234)
    await verified(harness)


async def test_an_old_written_off_invoice_never_posted_is_posted_when_paid(
    harness: Harness,
) -> None:
    invoice_id = await legacy_invoice(harness, "kim", "10.00")
    owed = f"receivable:{await customer_id(harness, 'kim')}:USD"
    await mark_as_before(harness, invoice_id)
    paid = await harness.post(f"/v1/invoices/{invoice_id}/payments")
    assert paid.json()["status"] == "paid"
    (recorded,) = await entries(harness, "PaymentRecorded")
    pay = recorded["payment_id"]
    assert recorded["transfer_ids"] == [
        f"{invoice_id}:revenue",
        f"{invoice_id}:write_off",
        f"{pay}:recovery",
        f"{pay}:cash",
    ]
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["cash:USD"]) == (0, 0, 1000)
    await verified(harness)
