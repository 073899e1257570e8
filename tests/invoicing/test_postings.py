"""Invoices on the ledger: finalization posts the receivable, revenue and tax payable;
payments post cash; credit notes reverse revenue and tax, and give paid money back as a
refund (owed, then paid by hand); a void reverses what is left. Each event names its
transfers in the event log, a paid invoice's receivable nets to zero, and the ledger
verifies clean after all of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import update

from billfold.invoicing import issuing, repository
from billfold.invoicing.records import Charge
from billfold.invoicing.tables import invoices
from tests.conftest import Harness, assert_problem
from tests.invoicing.helpers import (
    MAY_1,
    balances,
    customer_id,
    entries,
    open_invoice,
    taxed_harness,
    transfers,
    verified,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def taxed(tmp_path: Path, database_url: str) -> AsyncIterator[Harness]:
    harness = await taxed_harness(tmp_path, database_url)
    try:
        yield harness
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def test_a_finalized_invoice_posts_receivable_revenue_and_tax(taxed: Harness) -> None:
    invoice = await open_invoice(taxed, "hans", taxed=True)
    assert (invoice["subtotal_minor"], invoice["tax_minor"], invoice["total_minor"]) == (
        2900,
        551,
        3451,
    )
    assert invoice["posted_at"] is not None
    owed = f"receivable:{await customer_id(taxed, 'hans')}:USD"
    ids = [f"{invoice['id']}:revenue", f"{invoice['id']}:tax"]
    assert await transfers(taxed, ids) == [
        (ids[0], owed, "revenue:USD", 2900),
        (ids[1], owed, "tax_payable:USD", 551),
    ]
    (finalized,) = [
        e for e in await entries(taxed, "InvoiceFinalized") if e["invoice_id"] == invoice["id"]
    ]
    assert finalized["transfer_ids"] == ids
    assert await balances(taxed) == {owed: 3451, "revenue:USD": -2900, "tax_payable:USD": -551}
    await verified(taxed)


async def test_payments_post_cash_and_a_paid_invoice_owes_nothing(taxed: Harness) -> None:
    invoice = await open_invoice(taxed, "hans", taxed=True)
    owed = f"receivable:{await customer_id(taxed, 'hans')}:USD"
    url = f"/v1/invoices/{invoice['id']}/payments"
    first = await taxed.post(url, {"amount_minor": 1451})
    assert first.status_code == 201, first.text
    rest = await taxed.post(url)
    assert (rest.json()["status"], rest.json()["due_minor"]) == ("paid", 0)
    recorded = [
        e for e in await entries(taxed, "PaymentRecorded") if e["invoice_id"] == invoice["id"]
    ]
    assert sorted(e["amount_minor"] for e in recorded) == [1451, 2000]
    for entry in recorded:
        (transfer_id,) = entry["transfer_ids"]
        assert transfer_id == f"{entry['payment_id']}:cash"
        assert (await transfers(taxed, [transfer_id]))[0][1:] == (
            "cash:USD",
            owed,
            entry["amount_minor"],
        )
    found = await balances(taxed)
    assert (found[owed], found["cash:USD"], found["revenue:USD"]) == (0, 3451, -2900)
    await verified(taxed)


async def test_a_credit_note_on_an_unpaid_invoice_reverses_revenue_and_tax(
    taxed: Harness,
) -> None:
    invoice = await open_invoice(taxed, "hans", taxed=True)
    owed = f"receivable:{await customer_id(taxed, 'hans')}:USD"
    url = f"/v1/invoices/{invoice['id']}/credit-notes"
    note = await taxed.post(
        url, {"reason": "outage", "lines": [{"position": 1, "amount_minor": 1190}]}
    )
    assert note.status_code == 201, note.text
    assert (note.json()["tax_minor"], note.json()["refund_minor"], note.json()["refund_to"]) == (
        190,
        0,
        None,
    )
    cn = note.json()["id"]
    (issued,) = await entries(taxed, "CreditNoteIssued")
    assert issued["transfer_ids"] == [f"{cn}:revenue", f"{cn}:tax"]
    assert [t[1:] for t in await transfers(taxed, issued["transfer_ids"])] == [
        ("revenue:USD", owed, 1000),
        ("tax_payable:USD", owed, 190),
    ]
    paid = await taxed.post(f"/v1/invoices/{invoice['id']}/payments")
    assert (paid.json()["status"], paid.json()["paid_minor"]) == ("paid", 2261)
    found = await balances(taxed)
    assert (found[owed], found["revenue:USD"], found["tax_payable:USD"]) == (0, -1900, -361)
    await verified(taxed)


async def test_crediting_what_was_paid_is_a_refund_owed_then_paid_once(taxed: Harness) -> None:
    invoice = await open_invoice(taxed, "hans", taxed=True)
    owed = f"receivable:{await customer_id(taxed, 'hans')}:USD"
    await taxed.post(f"/v1/invoices/{invoice['id']}/payments", {"amount_minor": 3000})
    url = f"/v1/invoices/{invoice['id']}/credit-notes"
    refused = await taxed.post(url, {"reason": "cancelled"})
    assert assert_problem(refused, 409, "credit_exceeds_amount_due")["refund_minor"] == 3000
    note = await taxed.post(url, {"reason": "cancelled", "refund_to": "refund"})
    assert note.status_code == 201, note.text
    assert (note.json()["total_minor"], note.json()["refund_minor"]) == (3451, 3000)
    assert (note.json()["refund_to"], note.json()["refund_paid_at"]) == ("refund", None)
    after = (await taxed.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (after["status"], after["due_minor"], after["refunded_minor"]) == ("paid", 0, 3000)
    cn = note.json()["id"]
    (issued,) = await entries(taxed, "CreditNoteIssued")
    assert issued["transfer_ids"] == [f"{cn}:revenue", f"{cn}:tax", f"{cn}:refund"]
    assert (await transfers(taxed, [f"{cn}:refund"]))[0][1:] == (owed, "refunds_payable:USD", 3000)
    found = await balances(taxed)
    assert (found[owed], found["revenue:USD"], found["tax_payable:USD"]) == (0, 0, 0)
    assert (found["cash:USD"], found["refunds_payable:USD"]) == (3000, -3000)

    paid_url = f"{url}/{cn}/refund-paid"
    paid = await taxed.post(paid_url, {"reference": "wire back 7"})
    assert paid.status_code == 200, paid.text
    assert (paid.json()["refund_reference"], paid.json()["refund_paid_at"]) == (
        "wire back 7",
        taxed.clock.now().isoformat().replace("+00:00", "Z"),
    )
    taxed.clock.advance(timedelta(hours=1))
    again = await taxed.post(paid_url, {"reference": "other"})
    assert again.json() == paid.json()  # once: no second effect
    (refund,) = await entries(taxed, "RefundPaid")
    assert refund["transfer_ids"] == [f"{cn}:refund_paid"]
    found = await balances(taxed)
    assert (found["cash:USD"], found["refunds_payable:USD"]) == (0, 0)
    await verified(taxed)


async def test_refund_paid_is_refused_where_no_refund_is_owed(harness: Harness) -> None:
    invoice = await open_invoice(harness, "ann")
    url = f"/v1/invoices/{invoice['id']}/credit-notes"
    note = (
        await harness.post(url, {"reason": "x", "lines": [{"position": 1, "amount_minor": 100}]})
    ).json()
    refused = await harness.post(f"{url}/{note['id']}/refund-paid")
    assert_problem(refused, 409, "no_refund_owed")
    missing = await harness.post(f"{url}/cn_{'a' * 26}/refund-paid")
    assert_problem(missing, 404, "credit_note_not_found")


async def test_a_credit_beyond_a_part_payment_credits_the_due_and_refunds_the_rest(
    harness: Harness,
) -> None:
    invoice = await open_invoice(harness, "ann")
    owed = f"receivable:{await customer_id(harness, 'ann')}:USD"
    await harness.post(f"/v1/invoices/{invoice['id']}/payments", {"amount_minor": 2000})
    note = await harness.post(
        f"/v1/invoices/{invoice['id']}/credit-notes", {"reason": "x", "refund_to": "refund"}
    )
    assert (note.json()["total_minor"], note.json()["refund_minor"]) == (2900, 2000)
    after = (await harness.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (after["status"], after["due_minor"], after["credited_minor"]) == ("paid", 0, 2900)
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"], found["refunds_payable:USD"]) == (0, 0, -2000)
    await verified(harness)


async def test_a_void_reverses_what_is_left_of_revenue(harness: Harness) -> None:
    invoice = await open_invoice(harness, "dan")
    owed = f"receivable:{await customer_id(harness, 'dan')}:USD"
    await harness.post(
        f"/v1/invoices/{invoice['id']}/credit-notes",
        {"reason": "x", "lines": [{"position": 1, "amount_minor": 900}]},
    )
    voided = await harness.post(f"/v1/invoices/{invoice['id']}/void", {"reason": "duplicate"})
    assert voided.json()["status"] == "void"
    (entry,) = [
        e for e in await entries(harness, "InvoiceVoided") if e["invoice_id"] == invoice["id"]
    ]
    assert entry["transfer_ids"] == [f"{invoice['id']}:void:revenue"]
    assert (await transfers(harness, entry["transfer_ids"]))[0][1:] == ("revenue:USD", owed, 2000)
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"]) == (0, 0)
    await verified(harness)


async def legacy_invoice(harness: Harness, customer: str, amount: str) -> str:
    """An open invoice as invoices were finalized before they posted: nothing on the
    ledger, no `posted_at`."""
    harness.clock.travel_to(MAY_1)
    answer = await harness.client.put(f"/v1/customers/{customer}", json={}, headers=harness.admin)
    assert answer.status_code in (200, 201), answer.text
    new = issuing.NewInvoice(
        customer_id=await customer_id(harness, customer),
        subscription_id=None,
        currency="USD",
        reason="manual",
        period_start=MAY_1,
        period_end=MAY_1 + timedelta(days=30),
        charges=[Charge("recurring", "Before the ledger", Decimal(1), Decimal(amount))],
        finalize_at=MAY_1,
    )
    async with harness.database.transaction() as session:
        invoice_id = await issuing.create_draft(session, harness.operator(), new)
        assert invoice_id is not None
        await session.execute(
            update(invoices)
            .where(invoices.c.id == invoice_id)
            .values(status="open", number=f"INV-OLD-{customer}", finalized_at=MAY_1, due_at=MAY_1)
        )
    return invoice_id


async def test_an_invoice_finalized_before_postings_is_posted_when_first_paid(
    harness: Harness,
) -> None:
    invoice_id = await legacy_invoice(harness, "olga", "12.34")
    assert await balances(harness) == {}
    owed = f"receivable:{await customer_id(harness, 'olga')}:USD"
    url = f"/v1/invoices/{invoice_id}/payments"
    first = await harness.post(url, {"amount_minor": 1000})
    assert first.json()["posted_at"] is not None
    second = await harness.post(url)
    assert second.json()["status"] == "paid"
    recorded = [
        e for e in await entries(harness, "PaymentRecorded") if e["invoice_id"] == invoice_id
    ]
    assert [e["transfer_ids"] for e in recorded] == [
        [f"{invoice_id}:revenue", f"{recorded[0]['payment_id']}:cash"],
        [f"{recorded[1]['payment_id']}:cash"],  # posted once
    ]
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"], found["cash:USD"]) == (0, -1234, 1234)
    await verified(harness)


async def test_an_old_invoice_is_posted_with_the_payments_and_credits_it_had(
    harness: Harness,
) -> None:
    invoice_id = await legacy_invoice(harness, "pia", "20.00")
    owed = f"receivable:{await customer_id(harness, 'pia')}:USD"
    async with harness.database.transaction() as session:  # recorded before postings
        await repository.insert_payment(
            session,
            id="pay_old",
            tenant_id=harness.tenant_id,
            invoice_id=invoice_id,
            amount_minor=500,
            method="manual",
            reference=None,
            paid_at=MAY_1,
            created_at=MAY_1,
        )
        await repository.insert_credit_note(
            session,
            id="cn_old",
            tenant_id=harness.tenant_id,
            invoice_id=invoice_id,
            number="CN-OLD-1",
            reason="old",
            lines=[{"position": 1, "description": "x", "amount_minor": 300, "tax_minor": 0}],
            total_minor=300,
            tax_minor=0,
            created_at=MAY_1,
        )
        await repository.update_invoice(session, invoice_id, paid_minor=500, credited_minor=300)
    paid = await harness.post(f"/v1/invoices/{invoice_id}/payments")
    assert (paid.json()["status"], paid.json()["paid_minor"]) == ("paid", 1700)
    (recorded,) = [
        e for e in await entries(harness, "PaymentRecorded") if e["invoice_id"] == invoice_id
    ]
    assert recorded["transfer_ids"] == [
        f"{invoice_id}:revenue",
        "pay_old:cash",
        "cn_old:revenue",
        f"{recorded['payment_id']}:cash",
    ]
    found = await balances(harness)
    assert (found[owed], found["revenue:USD"], found["cash:USD"]) == (0, -1700, 1700)
    await verified(harness)
