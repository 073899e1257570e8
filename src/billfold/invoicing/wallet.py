"""Invoices and the customer's wallet (decision 0043): wallet credit in the invoice's
currency pays an invoice, in part or in full (an admin's action), and a credit note can
give paid money back to the wallet instead of refunding it. The wallet draws and credits
its lots (`billfold.wallets.service`); the other side of each of its transfers is the
invoice's receivable (in the invoice's book: a test-clock customer's is in the test
book, decision 0046), so the receivable nets to what is due. On an uncollectible
invoice, what the wallet pays is taken back from bad debt, as any payment's is."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.invoicing import books, postings
from billfold.invoicing.records import Invoice
from billfold.invoicing.service import (
    add_payment,
    amount_to_pay,
    due_of,
    payable,
    post_finalization,
)
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.ids import new_id
from billfold.wallets import service as wallets

METHOD = "wallet"  # what a payment from the wallet is recorded as


async def pay(
    session: AsyncSession,
    ctx: Context,
    invoice_id: str,
    *,
    amount_minor: int | None,
    allow_partial: bool,
) -> Invoice:
    """Pay the invoice from the customer's wallet in its currency: `amount_minor` (by
    default all that is due), or with `allow_partial` as much of it as the wallet holds.
    A wallet short of it (or, partial, empty) is refused with `insufficient_balance`
    (402) and nothing is paid. The invoice is paid when nothing is left due."""
    row = await payable(session, ctx, invoice_id)
    amount = amount_to_pay(row, amount_minor)
    stand = await books.standing(session, ctx.tenant_id, row)
    payment_id = new_id("pay")
    transfer_ids = await post_finalization(session, ctx, row, stand.book)
    spent = await wallets.spend(
        session,
        ctx,
        customer_id=row.customer_external_id,
        unit=row.currency,
        amount=amount,
        reference=payment_id,
        to_account=stand.book.receivable,
        allow_partial=allow_partial,
    )
    if spent.amount == 0:
        raise wallets.insufficient(row.currency, spent.balance_after, amount)
    # What it paid (known once the wallet drew it), back from bad debt if written off.
    recovery = books.recovery(row, stand, payment_id, spent.amount, due_of(row))
    transfer_ids += spent.transfer_ids + await postings.post(session, ctx, recovery)
    return await add_payment(
        session,
        ctx,
        row,
        payment_id=payment_id,
        amount_minor=spent.amount,
        method=METHOD,
        reference=spent.wallet_id,
        paid_at=None,
        transfer_ids=transfer_ids,
    )


async def give_back(
    session: AsyncSession,
    ctx: Context,
    row: Record,
    book: postings.Book,
    credit_note_id: str,
    amount_minor: int,
) -> list[str]:
    """Credit `amount_minor` of what was paid to the customer's wallet in the invoice's
    currency, from the receivable (which the credit note's reversal credited), as a lot
    referenced by the credit note; the ids of its transfers."""
    lot = await wallets.credit(
        session,
        ctx,
        customer_id=row.customer_external_id,
        unit=row.currency,
        amount=amount_minor,
        source="credit_note",
        reference=credit_note_id,
        funded_by=book.receivable,
    )
    return [lot.transfer_id]
