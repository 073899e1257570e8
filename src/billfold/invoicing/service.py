"""Invoices as stored: drafts made from charges, finalized with gapless numbers, paid,
voided or marked uncollectible. Each line is rounded once, half up, in the currency's
minor units, its precise amount kept beside it; totals are sums of rounded lines.

    draft ──finalize──> open ──payment──> paid
      │                  │ └──> uncollectible ──payment──> paid
      └──void            └──void             └──void

A finalized invoice never changes: only its payments and credit notes are added beside
it. Making drafts and finalizing them is `issuing`'s; reading, paying, voiding and
writing off is this module's. Writing off posts what is due to bad debt; a payment,
credit note or void of an uncollectible invoice takes what it settles back from bad debt
first (decision 0046).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers import service as customers
from billfold.invoicing import books, document, postings, repository
from billfold.invoicing.document import InvoiceStatus, Party
from billfold.invoicing.records import (
    Invoice,
    Invoicing,
    as_document,
    buyer_of,
    check,
    with_lines,
)
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_id
from billfold.tenants import service as tenants


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"


class InvoiceStateConflict(Conflict):
    code = "invoice_status_conflict"
    title = "The invoice's status does not allow this"


class PaymentExceedsDue(InvalidInput):
    status = 409
    code = "payment_exceeds_amount_due"
    title = "A payment larger than what is due"


async def as_rendered(
    session: AsyncSession, tenant_id: str, invoice_id: str, invoicing: Invoicing
) -> document.Invoice:
    """The invoice as its documents show it: a finalized one with the parties it was
    finalized with; a draft with the seller and the customer as they are now."""
    invoice = await get(session, tenant_id, invoice_id)
    if invoice.seller is not None:
        return as_document(invoice)
    customer = await customers.get(session, tenant_id, invoice.customer)
    seller = await seller_of(session, tenant_id, invoicing)
    where = customer.billing.locale or invoicing.locale
    return as_document(invoice, seller=seller, buyer=buyer_of(customer), locale=where)


async def seller_of(session: AsyncSession, tenant_id: str, invoicing: Invoicing) -> Party:
    if invoicing.seller is not None:
        return invoicing.seller
    tenant = await tenants.get_tenant(session, tenant_id)
    return Party(name=tenant.name, address=(), country=None)


async def record_payment(
    session: AsyncSession,
    ctx: Context,
    invoice_id: str,
    *,
    amount_minor: int | None,
    method: str,
    reference: str | None,
    paid_at: datetime | None,
) -> Invoice:
    """A payment against an open (or uncollectible) invoice: the amount due when
    `amount_minor` is None, never more than is due. Paid in full, it is paid. The cash
    is posted against the receivable (after the invoice's finalization, if that was
    never posted; on an uncollectible invoice, after taking the amount back from bad
    debt)."""
    row = await payable(session, ctx, invoice_id)
    amount = amount_to_pay(row, amount_minor)
    stand = await books.standing(session, ctx.tenant_id, row)
    payment_id = new_id("pay")
    transfer_ids = await post_finalization(session, ctx, row, stand.book)
    legs = books.recovery(row, stand, payment_id, amount, due_of(row))
    legs += postings.paid(payment_id, invoice_id, stand.book, amount)
    transfer_ids += await postings.post(session, ctx, legs)
    return await add_payment(
        session,
        ctx,
        row,
        payment_id=payment_id,
        amount_minor=amount,
        method=method,
        reference=reference,
        paid_at=paid_at,
        transfer_ids=transfer_ids,
    )


async def payable(session: AsyncSession, ctx: Context, invoice_id: str) -> Record:
    """The invoice, locked, if payments may be recorded against it."""
    row = await locked(session, ctx.tenant_id, invoice_id)
    if row.status not in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
        raise InvoiceStateConflict(
            f"invoice {invoice_id} is {row.status}; payments are recorded against open "
            "or uncollectible invoices",
            extra={"current_status": row.status},
        )
    return row


def due_of(row: Record) -> int:
    return int(row.total_minor - row.paid_minor - row.credited_minor + row.refunded_minor)


def amount_to_pay(row: Record, amount_minor: int | None) -> int:
    """`amount_minor`, or all that is due; refused unless between 1 and what is due."""
    due = due_of(row)
    amount = due if amount_minor is None else amount_minor
    if amount <= 0 or amount > due:
        raise PaymentExceedsDue(
            f"{amount} minor units is not between 1 and the {due} due",
            errors=[FieldError(f"at most {due}", pointer="#/amount_minor")],
            extra={"due_minor": due},
        )
    return amount


async def add_payment(
    session: AsyncSession,
    ctx: Context,
    row: Record,
    *,
    payment_id: str,
    amount_minor: int,
    method: str,
    reference: str | None,
    paid_at: datetime | None,
    transfer_ids: list[str],
) -> Invoice:
    """Record a payment whose transfers are posted, and settle the invoice when nothing
    is left due."""
    invoice_id, amount = row.id, amount_minor
    when = paid_at or ctx.now
    await repository.insert_payment(
        session,
        id=payment_id,
        tenant_id=ctx.tenant_id,
        invoice_id=invoice_id,
        amount_minor=amount,
        method=method,
        reference=reference,
        paid_at=when,
        created_at=ctx.now,
    )
    paid = row.paid_minor + amount
    settled = due_of(row) == amount
    await repository.update_invoice(
        session,
        invoice_id,
        paid_minor=paid,
        status=InvoiceStatus.PAID if settled else row.status,
        paid_at=when if settled else None,
        updated_at=ctx.now,
    )
    await eventlog.record(
        session,
        ctx,
        "PaymentRecorded",
        {
            "invoice_id": invoice_id,
            "payment_id": payment_id,
            "amount_minor": amount,
            "currency": row.currency,
            "method": method,
            "transfer_ids": transfer_ids,
        },
        customer_id=row.customer_id,
    )
    if settled:
        await eventlog.record(
            session,
            ctx,
            "InvoicePaid",
            {"invoice_id": invoice_id, "number": row.number, "total_minor": row.total_minor},
            customer_id=row.customer_id,
        )
    return await get(session, ctx.tenant_id, invoice_id)


async def void(session: AsyncSession, ctx: Context, invoice_id: str, *, reason: str) -> Invoice:
    """Void a draft, an open or an uncollectible invoice: nothing is due any more. A
    payment already recorded stays; a paid invoice is corrected by a credit note. What
    was written off of it is taken back from bad debt first."""
    row = await locked(session, ctx.tenant_id, invoice_id)
    if row.status == InvoiceStatus.VOID:
        return await get(session, ctx.tenant_id, invoice_id)
    if row.status == InvoiceStatus.PAID or row.paid_minor:
        raise InvoiceStateConflict(
            f"invoice {invoice_id} has payments; correct it with a credit note",
            extra={"current_status": row.status},
        )
    transfer_ids: list[str] = []
    if row.posted_at is not None:  # what is left of its revenue and tax, reversed
        stand = await books.standing(session, ctx.tenant_id, row)
        notes = await repository.credit_notes_of(session, [invoice_id])
        credited_tax = sum(note.tax_minor for note in notes)
        credited_net = sum(note.total_minor for note in notes) - credited_tax
        legs = []
        if stand.written_off:  # one never written off on the ledger has nothing to take back
            legs += postings.recovered(f"{invoice_id}:void", invoice_id, stand.book, due_of(row))
        legs += postings.voided(
            invoice_id,
            stand.book,
            row.subtotal_minor - credited_net,
            row.tax_minor - credited_tax,
        )
        transfer_ids = await postings.post(session, ctx, legs)
    await repository.update_invoice(
        session,
        invoice_id,
        status=InvoiceStatus.VOID,
        voided_at=ctx.now,
        void_reason=reason,
        updated_at=ctx.now,
    )
    await eventlog.record(
        session,
        ctx,
        "InvoiceVoided",
        {
            "invoice_id": invoice_id,
            "number": row.number,
            "reason": reason,
            "transfer_ids": transfer_ids,
        },
        customer_id=row.customer_id,
    )
    return await get(session, ctx.tenant_id, invoice_id)


async def mark_uncollectible(session: AsyncSession, ctx: Context, invoice_id: str) -> Invoice:
    """Write an open invoice off: what is due moves from its receivable to bad debt
    (`{invoice}:write_off`), and it stays payable (a payment takes what it pays back
    from bad debt first). Marking it again changes nothing, except for an invoice marked
    before write-offs posted (decision 0046): that posts its write-off, for what is due
    now, and records it."""
    row = await locked(session, ctx.tenant_id, invoice_id)
    if row.status not in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
        raise InvoiceStateConflict(
            f"invoice {invoice_id} is {row.status}; only an open invoice is uncollectible",
            extra={"current_status": row.status},
        )
    stand = await books.standing(session, ctx.tenant_id, row)
    if stand.written_off:  # a replay
        return await get(session, ctx.tenant_id, invoice_id)
    due = due_of(row)
    transfer_ids = await post_finalization(session, ctx, row, stand.book)
    transfer_ids += await postings.post(
        session, ctx, postings.written_off(invoice_id, stand.book, due)
    )
    if row.status == InvoiceStatus.UNCOLLECTIBLE and not transfer_ids:
        return await get(session, ctx.tenant_id, invoice_id)  # nothing was due to write off
    if row.status == InvoiceStatus.OPEN:
        await repository.update_invoice(
            session,
            invoice_id,
            status=InvoiceStatus.UNCOLLECTIBLE,
            uncollectible_at=ctx.now,
            updated_at=ctx.now,
        )
    await eventlog.record(
        session,
        ctx,
        "InvoiceMarkedUncollectible",
        {
            "invoice_id": invoice_id,
            "number": row.number,
            "written_off_minor": due,
            "currency": row.currency,
            "transfer_ids": transfer_ids,
        },
        customer_id=row.customer_id,
    )
    return await get(session, ctx.tenant_id, invoice_id)


async def get(session: AsyncSession, tenant_id: str, invoice_id: str) -> Invoice:
    row = await repository.by_id(session, tenant_id, invoice_id)
    if row is None:
        raise InvoiceNotFound(f"no invoice {invoice_id!r}")
    (invoice,) = await with_lines(session, [row])
    check(invoice)
    return invoice


async def page(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer_id: str | None = None,
    statuses: Sequence[str] = (),
    period_from: datetime | None = None,
    period_to: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int,
) -> list[Invoice]:
    rows = await repository.page(
        session,
        tenant_id,
        customer_id=customer_id,
        statuses=statuses,
        period_from=period_from,
        period_to=period_to,
        after=after,
        limit=limit,
    )
    invoices = await with_lines(session, rows)
    for invoice in invoices:
        check(invoice)
    return invoices


async def due_drafts(
    session: AsyncSession,
    now: datetime,
    *,
    limit: int,
    tenant_id: str | None = None,
    test_clock_id: str | None = None,
) -> list[Record]:
    """(tenant_id, id, finalize_at) of the drafts whose grace has ended by `now`, oldest
    first: of live customers, or of the customers on `test_clock_id`."""
    return await repository.due_drafts(session, now, limit, tenant_id, test_clock_id)


async def post_finalization(
    session: AsyncSession, ctx: Context, row: Record, book: postings.Book
) -> list[str]:
    """Post a finalized invoice's history if it never was (it was finalized before
    invoices posted, decision 0043): its finalization, and the payments and credit notes
    recorded since, by the ids they would have had, now, in one linked batch, so its
    receivable nets to what is due. The ids of the transfers, or none when it was
    posted. The caller holds the invoice's lock."""
    if row.posted_at is not None or row.status == InvoiceStatus.DRAFT:
        return []
    legs = postings.finalized(row.id, book, row.subtotal_minor, row.tax_minor)
    for payment in await repository.payments_of(session, [row.id]):
        legs += postings.paid(payment.id, row.id, book, payment.amount_minor)
    for note in await repository.credit_notes_of(session, [row.id]):
        legs += postings.credited(
            note.id,
            row.id,
            book,
            net_minor=note.total_minor - note.tax_minor,
            tax_minor=note.tax_minor,
            refund_minor=note.refund_minor,  # none before: refunds came with postings
        )
    transfer_ids = await postings.post(session, ctx, legs)
    await repository.update_invoice(session, row.id, posted_at=ctx.now)
    return transfer_ids


async def locked(session: AsyncSession, tenant_id: str, invoice_id: str) -> Record:
    row = await repository.by_id(session, tenant_id, invoice_id, lock=True)
    if row is None:
        raise InvoiceNotFound(f"no invoice {invoice_id!r}")
    return row
