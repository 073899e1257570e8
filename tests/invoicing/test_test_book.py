"""Test-mode books (decision 0046): a test-clock customer's invoices post to the test book,
accounts whose codes begin with `test:`, in every event (finalized, paid from outside or
from the wallet, credited with a refund or to the wallet, refund paid, written off,
voided), so test money never mixes with the live books. An invoice posted to the live
book before test books existed keeps posting there, so its receivable still nets."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from billfold.invoicing import issuing, postings
from billfold.invoicing.records import Charge
from billfold.invoicing.tables import invoices
from tests.billing.test_period_close import invoices as invoices_of
from tests.billing.test_period_close import subscribe
from tests.billing.test_test_clocks import advance, clock
from tests.conftest import Harness
from tests.invoicing.helpers import (
    MAY_1,
    balances,
    customer_id,
    entries,
    open_invoice,
    transfers,
    verified,
)
from tests.wallets.helpers import balance, credit

pytestmark = pytest.mark.anyio

# The accounts invoices post to, in the live book.
LIVE = ("receivable:", "revenue:", "cash:", "tax_payable:", "refunds_payable:", "bad_debt:")


def live_postings(found: dict[str, int]) -> dict[str, int]:
    return {code: amount for code, amount in found.items() if code.startswith(LIVE)}


async def clocked(harness: Harness, customer: str, months: int = 1) -> list[dict[str, Any]]:
    """A test-clock customer on pro from May 1st, its clock moved past `months` invoices'
    finalization: its invoices, open, oldest first."""
    rehearsal = await clock(harness, "2026-05-01T09:00:00Z", customer)
    await subscribe(harness, customer, plan="pro")
    await advance(harness, rehearsal["id"], f"2026-{4 + months:02d}-01T12:00:00Z")
    made = await invoices_of(harness, customer)
    assert [(i["status"], i["total_minor"]) for i in made] == [("open", 2900)] * months
    return made


async def test_a_test_customers_invoice_posts_to_the_test_book(harness: Harness) -> None:
    (invoice,) = await clocked(harness, "tc-ann")
    owed = f"test:receivable:{await customer_id(harness, 'tc-ann')}:USD"
    (finalized,) = await entries(harness, "InvoiceFinalized")
    assert await transfers(harness, finalized["transfer_ids"]) == [
        (f"{invoice['id']}:revenue", owed, "test:revenue:USD", 2900)
    ]
    paid = await harness.post(f"/v1/invoices/{invoice['id']}/payments")
    assert paid.json()["status"] == "paid"
    assert await balances(harness) == {owed: 0, "test:revenue:USD": -2900, "test:cash:USD": 2900}

    # A live customer's invoice, beside it, posts to the live book, which holds only it.
    live = await open_invoice(harness, "ann")
    await harness.post(f"/v1/invoices/{live['id']}/payments", {"amount_minor": 900})
    found = await balances(harness)
    assert live_postings(found) == {
        f"receivable:{await customer_id(harness, 'ann')}:USD": 2000,
        "revenue:USD": -2900,
        "cash:USD": 900,
    }
    assert (found["test:revenue:USD"], found["test:cash:USD"]) == (-2900, 2900)
    await verified(harness)


async def test_every_event_of_a_test_invoice_posts_to_the_test_book(harness: Harness) -> None:
    first, second, third, fourth = await clocked(harness, "tc-bo", months=4)
    owed = f"test:receivable:{await customer_id(harness, 'tc-bo')}:USD"
    await credit(harness, 1000, customer="tc-bo", unit="USD")

    async def act(invoice: dict[str, Any], path: str, body: Any = None) -> dict[str, Any]:
        answer = await harness.post(f"/v1/invoices/{invoice['id']}/{path}", body)
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json())

    # Paid from the wallet and from outside, then credited: what was paid to the wallet.
    await act(first, "payments", {"source": "wallet", "allow_partial": True})  # 1000
    await act(first, "payments", {"amount_minor": 900})
    await act(first, "credit-notes", {"reason": "x", "refund_to": "wallet"})
    # Paid, credited as a refund, the refund paid out.
    await act(second, "payments", {"amount_minor": 1000})
    note = await act(second, "credit-notes", {"reason": "y", "refund_to": "refund"})
    await act(second, f"credit-notes/{note['id']}/refund-paid")
    # Written off, then paid from outside and from the wallet, the rest credited.
    await act(third, "mark-uncollectible")
    await act(third, "payments", {"amount_minor": 500})
    await act(third, "payments", {"source": "wallet", "allow_partial": True})  # 1900
    rest = {"reason": "z", "lines": [{"position": 1, "amount_minor": 500}]}
    assert (await act(third, "credit-notes", rest))["total_minor"] == 500
    # Written off, then voided.
    await act(fourth, "mark-uncollectible")
    await act(fourth, "void", {"reason": "test"})

    found = await balances(harness)
    assert live_postings(found) == {}  # nothing of it in the live book
    assert {code: amount for code, amount in found.items() if code.startswith("test:")} == {
        owed: 0,
        "test:revenue:USD": -2400,  # the third invoice, less its credit note
        "test:cash:USD": 900 + 1000 - 1000 + 500,
        "test:refunds_payable:USD": 0,
        "test:bad_debt:USD": 0,
    }
    assert (await balance(harness, "tc-bo", "USD")).available == 0  # 1000 + 1900 spent
    statuses = [i["status"] for i in await invoices_of(harness, "tc-bo")]
    assert statuses == ["paid", "paid", "paid", "void"]
    await verified(harness)


async def test_an_invoice_posted_to_the_live_book_before_test_books_stays_there(
    harness: Harness,
) -> None:
    rehearsal = await clock(harness, "2026-05-01T09:00:00Z", "tc-cy")
    customer = await customer_id(harness, "tc-cy")
    new = issuing.NewInvoice(
        customer_id=customer,
        subscription_id=None,
        currency="USD",
        reason="manual",
        period_start=MAY_1,
        period_end=MAY_1 + timedelta(days=30),
        charges=[Charge("recurring", "Before test books", Decimal(1), Decimal("12.34"))],
        finalize_at=MAY_1,
    )
    async with harness.database.transaction() as session:  # finalized as before 0046
        ctx = harness.operator()
        invoice_id = await issuing.create_draft(session, ctx, new)
        assert invoice_id is not None
        await session.execute(
            update(invoices)
            .where(invoices.c.id == invoice_id)
            .values(status="open", number="TEST-INV-OLD", finalized_at=MAY_1, posted_at=MAY_1)
        )
        live = postings.Book(customer, "USD", test=False)
        await postings.post(session, ctx, postings.finalized(invoice_id, live, 1234, 0))
    owed = f"receivable:{customer}:USD"
    url = f"/v1/invoices/{invoice_id}"
    assert (await harness.post(f"{url}/payments", {"amount_minor": 234})).status_code == 201
    assert (await harness.post(f"{url}/mark-uncollectible")).status_code == 200
    found = await balances(harness)
    assert (found[owed], found["bad_debt:USD"], found["cash:USD"]) == (0, 1000, 234)
    paid = await harness.post(f"{url}/payments")
    assert paid.json()["status"] == "paid"
    found = await balances(harness)
    assert found == {owed: 0, "revenue:USD": -1234, "cash:USD": 1234, "bad_debt:USD": 0}
    # Its customer's new invoices post to the test book.
    await subscribe(harness, "tc-cy", plan="pro")
    await advance(harness, rehearsal["id"], "2026-05-01T12:00:00Z")
    found = await balances(harness)
    assert found[f"test:receivable:{customer}:USD"] == 2900
    assert found["revenue:USD"] == -1234
    await verified(harness)
