"""Refunds: what a credit note gives back of what was paid, when the admin chose a
refund (`refund_to: refund`). The credit note moved it to `refunds_payable`; until the
payment connector pays refunds out, an admin pays it by hand and marks it paid here,
which moves it from `refunds_payable` to `cash` (decision 0043). Once only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.invoicing import books, postings, repository
from billfold.invoicing.credit_notes import CreditNote, note_of
from billfold.invoicing.service import locked
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.errors import Conflict, NotFound


class CreditNoteNotFound(NotFound):
    code = "credit_note_not_found"


class NoRefundOwed(Conflict):
    code = "no_refund_owed"
    title = "The credit note owes no refund"


async def mark_paid(
    session: AsyncSession,
    ctx: Context,
    invoice_id: str,
    credit_note_id: str,
    *,
    reference: str | None,
    paid_at: datetime | None,
) -> CreditNote:
    """Mark the credit note's refund paid out: cash leaves `refunds_payable`. Marking it
    again returns it as it is, with no second effect."""
    row = await locked(session, ctx.tenant_id, invoice_id)  # one writer per invoice
    found = await repository.credit_note_by_id(session, ctx.tenant_id, invoice_id, credit_note_id)
    if found is None:
        raise CreditNoteNotFound(f"invoice {invoice_id} has no credit note {credit_note_id!r}")
    if found.refund_to != "refund" or found.refund_minor <= 0:
        raise NoRefundOwed(
            f"credit note {found.number} owes no refund (it gave back "
            f"{found.refund_minor} to {found.refund_to or 'nothing'})",
            extra={"refund_to": found.refund_to},
        )
    if found.refund_paid_at is not None:
        return note_of(found)
    stand = await books.standing(session, ctx.tenant_id, row)  # the book it was owed in
    leg = postings.refund_paid(found.id, invoice_id, stand.book, found.refund_minor)
    transfer_ids = await postings.post(session, ctx, [leg])
    when = paid_at or ctx.now
    await repository.update_credit_note(
        session, found.id, refund_paid_at=when, refund_reference=reference
    )
    await eventlog.record(
        session,
        ctx,
        "RefundPaid",
        {
            "invoice_id": invoice_id,
            "credit_note_id": found.id,
            "number": found.number,
            "amount_minor": found.refund_minor,
            "currency": row.currency,
            "reference": reference,
            "transfer_ids": transfer_ids,
        },
        customer_id=row.customer_id,
    )
    updated = await repository.credit_note_by_id(session, ctx.tenant_id, invoice_id, credit_note_id)
    assert updated is not None
    return note_of(updated)
