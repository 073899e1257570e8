"""Invoices as stored: drafts made from charges, finalized with gapless numbers, paid,
voided or marked uncollectible. Each line is rounded once, half up, in the currency's
minor units, its precise amount kept beside it; totals are sums of rounded lines.

    draft ──finalize──> open ──payment──> paid
      │                  │ └──> uncollectible ──payment──> paid
      └──void            └──void             └──void

A finalized invoice never changes: only its payments (and, later, credit notes) are
added beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers import service as customers
from billfold.invoicing import document, repository
from billfold.invoicing.document import InvoiceStatus, LineKind, Party, new_line
from billfold.invoicing.records import (
    Charge,
    Invoice,
    Invoicing,
    Numbering,
    as_document,
    buyer_of,
    check,
    document_line,
    party_json,
    with_lines,
)
from billfold.invoicing.taxes import apply_quote
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_id
from billfold.kit.invariants import invariant
from billfold.tenants import service as tenants

MAX_LINES: Final = 1_000  # lines an invoice may hold


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"


class InvoiceStateConflict(Conflict):
    code = "invoice_status_conflict"
    title = "The invoice's status does not allow this"


class PaymentExceedsDue(InvalidInput):
    status = 409
    code = "payment_exceeds_amount_due"
    title = "A payment larger than what is due"


def _line_rows(
    tenant_id: str,
    invoice_id: str,
    currency: str,
    charges: Sequence[Charge],
    start: int,
    now: datetime,
) -> tuple[list[dict[str, Any]], list[document.Line]]:
    """The rows of an invoice's lines, and the lines as the document has them."""
    rows, lines = [], []
    for offset, charge in enumerate(charges):
        invariant(charge.amount_precise.is_finite(), "a charge is a finite amount")
        rounded = new_line(  # the one rounding, half up, in minor units
            charge.description,
            LineKind(charge.kind),
            charge.quantity,
            charge.amount_precise,
            currency,
        )
        rows.append(
            {
                "id": new_id("inl"),
                "tenant_id": tenant_id,
                "invoice_id": invoice_id,
                "position": start + offset,
                "kind": charge.kind,
                "description": charge.description[:500],
                "meter": charge.meter,
                "quantity": charge.quantity,
                "price": dict(charge.price) if charge.price is not None else None,
                "period_start": charge.period_start,
                "period_end": charge.period_end,
                "amount_precise": charge.amount_precise,
                "amount_minor": rounded.amount_minor,
                "tax_rate": Decimal(0),
                "tax_minor": 0,
                "created_at": now,
            }
        )
        lines.append(rounded)
    return rows, lines


def _totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The sums of the rounded lines: the subtotal of their net amounts, the tax."""
    subtotal = sum(
        int(row["amount_minor"]) - (int(row["tax_minor"]) if row.get("tax_included") else 0)
        for row in rows
    )
    tax = sum(int(row["tax_minor"]) for row in rows)
    return {"subtotal_minor": subtotal, "tax_minor": tax, "total_minor": subtotal + tax}


@dataclass(frozen=True)
class NewInvoice:
    """An invoice to make from charges: a draft that waits for `finalize_at`, or, with
    `finalize`, one finalized at once (nothing more can land on it)."""

    customer_id: str
    subscription_id: str | None
    currency: str
    reason: str
    period_start: datetime
    period_end: datetime
    charges: Sequence[Charge]
    finalize_at: datetime
    rating: Mapping[str, Any] | None = None
    finalize: bool = False


async def create_draft(
    session: AsyncSession,
    ctx: Context,
    new: NewInvoice,
) -> str | None:
    """A draft invoice of the charges; None when the subscription already has one for the
    period (the unique constraint on (subscription, period) decides, whoever came
    first)."""
    invariant(not new.finalize, "a draft is not finalized")
    try:
        async with session.begin_nested():
            (invoice_id,) = await create_many(session, ctx, [new], Numbering(), Invoicing())
    except IntegrityError:
        if new.subscription_id is None:
            raise
        found = await repository.of_subscription_period(
            session, new.subscription_id, new.period_end
        )
        if found is None:
            raise
        return None
    return invoice_id


async def create_many(
    session: AsyncSession,
    ctx: Context,
    news: Sequence[NewInvoice],
    numbering: Numbering,
    invoicing: Invoicing,
) -> list[str]:
    """Invoices of one tenant made together, in the order given: a few statements for
    any number of them. Those to `finalize` are taxed, numbered (gapless, a block of the
    tenant's next numbers) and open, or paid when nothing is due. A second invoice for a
    subscription's period fails on the unique constraint, and the caller's transaction
    with it."""
    invoice_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    entries: list[eventlog.Entry] = []
    finalizing = [new for new in news if new.finalize]
    buyers: Mapping[str, customers.Customer] = {}
    seller: Party | None = None
    if finalizing:
        buyers = await customers.by_ids(session, ctx.tenant_id, [n.customer_id for n in finalizing])
        seller = await seller_of(session, ctx.tenant_id, invoicing)
    numbered: dict[str, list[dict[str, Any]]] = {}  # per series, in order
    for new in news:
        invariant(len(new.charges) <= MAX_LINES, "an invoice holds a bounded number of lines")
        invoice_id = new_id("inv")
        rows, lines = _line_rows(ctx.tenant_id, invoice_id, new.currency, new.charges, 1, ctx.now)
        invoice = {
            **_DRAFT,
            "id": invoice_id,
            "tenant_id": ctx.tenant_id,
            "customer_id": new.customer_id,
            "subscription_id": new.subscription_id,
            "reason": new.reason,
            "currency": new.currency,
            "period_start": new.period_start,
            "period_end": new.period_end,
            "finalize_at": new.finalize_at,
            "rating": dict(new.rating) if new.rating is not None else None,
            "created_at": ctx.now,
            "updated_at": ctx.now,
            **_totals(rows),
        }
        entries.append(_created(ctx, invoice))
        if new.finalize:
            assert seller is not None
            buyer = buyers[new.customer_id]
            taxes, values = _finalized(
                lines, new.currency, buyer, seller, numbering, invoicing, ctx.now
            )
            for row, tax in zip(rows, taxes, strict=True):
                row.update(tax)
            invoice.update(values)
            numbered.setdefault(_series_of(buyer), []).append(invoice)
        invoice_rows.append(invoice)
        line_rows += rows
    entries += await _number(session, ctx, numbering, numbered)
    await repository.insert_invoices(session, invoice_rows)
    await repository.insert_lines(session, line_rows)
    await eventlog.record_many(session, entries)
    return [invoice["id"] for invoice in invoice_rows]


# What a draft holds until it is finalized.
_DRAFT: Final[Mapping[str, Any]] = {
    "number": None,
    "status": InvoiceStatus.DRAFT,
    "seller": None,
    "buyer": None,
    "locale": None,
    "tax_note": None,
    "finalized_at": None,
    "due_at": None,
    "paid_at": None,
}


def _series_of(customer: customers.Customer) -> str:
    """A test-clock customer's invoices are numbered apart from the real ones."""
    return "test" if customer.test_clock_id else "live"


def _finalized(
    lines: Sequence[document.Line],
    currency: str,
    customer: customers.Customer,
    seller: Party,
    numbering: Numbering,
    invoicing: Invoicing,
    now: datetime,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A draft's lines taxed for the customer as they are now, and what its finalization
    sets (all but the number): the tax of each line, and the invoice's totals, status,
    dates and parties."""
    buyer = buyer_of(customer)
    quote = invoicing.taxes.quote(seller, buyer, currency, lines)
    taxed = apply_quote(lines, quote)
    taxes = [
        {
            "tax_rate": line.tax_rate,
            "tax_minor": line.tax_minor,
            "tax_name": line.tax_name,
            "tax_included": line.tax_included,
        }
        for line in taxed
    ]
    totals = _totals(
        [{"amount_minor": line.amount_minor, **tax} for line, tax in zip(taxed, taxes, strict=True)]
    )
    settled = totals["total_minor"] <= 0
    return taxes, {
        "status": InvoiceStatus.PAID if settled else InvoiceStatus.OPEN,
        "finalized_at": now,
        "due_at": now + timedelta(days=numbering.due_days),
        "paid_at": now if settled else None,
        "seller": party_json(seller),
        "buyer": party_json(buyer),
        "locale": customer.billing.locale or invoicing.locale,
        "tax_note": quote.note,
        "updated_at": now,
        **totals,
    }


def _created(ctx: Context, invoice: Mapping[str, Any]) -> eventlog.Entry:
    return eventlog.Entry(
        ctx,
        "InvoiceCreated",
        {
            "invoice_id": invoice["id"],
            "subscription_id": invoice["subscription_id"],
            "reason": invoice["reason"],
            "currency": invoice["currency"],
            "period_start": invoice["period_start"].isoformat(),
            "period_end": invoice["period_end"].isoformat(),
            "total_minor": invoice["total_minor"],
        },
        invoice["customer_id"],
    )


def _finalized_entry(ctx: Context, invoice: Mapping[str, Any]) -> eventlog.Entry:
    return eventlog.Entry(
        ctx,
        "InvoiceFinalized",
        {
            "invoice_id": invoice["id"],
            "number": invoice["number"],
            "total_minor": invoice["total_minor"],
            "tax_minor": invoice["tax_minor"],
        },
        invoice["customer_id"],
    )


async def replace_charges(
    session: AsyncSession,
    ctx: Context,
    invoice_id: str,
    kinds: Sequence[str],
    charges: Sequence[Charge],
) -> None:
    """Re-rate a draft: its lines of `kinds` become `charges`, placed first as period
    close places them, the other lines after them in their order (late usage lands here
    until the draft is finalized)."""
    row = await locked(session, ctx.tenant_id, invoice_id)
    if row.status != InvoiceStatus.DRAFT:
        raise InvoiceStateConflict(
            f"invoice {invoice_id} is {row.status}; only a draft changes",
            extra={"current_status": row.status},
        )
    kept = [
        dict(line._mapping)
        for line in await repository.lines_of(session, [invoice_id])
        if line.kind not in kinds
    ]
    await repository.delete_lines(session, invoice_id, [*kinds, *(line["kind"] for line in kept)])
    rows, _lines = _line_rows(ctx.tenant_id, invoice_id, row.currency, charges, 1, ctx.now)
    for offset, line in enumerate(kept, start=len(rows) + 1):
        rows.append({**line, "position": offset})
    await repository.insert_lines(session, rows)
    totals = _totals(rows)
    await repository.update_invoice(session, invoice_id, updated_at=ctx.now, **totals)


async def finalize(
    session: AsyncSession,
    ctx: Context,
    invoice_id: str,
    numbering: Numbering,
    invoicing: Invoicing,
) -> Invoice:
    """Finalize one draft (see `finalize_many`)."""
    await finalize_many(session, ctx, [invoice_id], numbering, invoicing)
    return await get(session, ctx.tenant_id, invoice_id)


async def finalize_many(
    session: AsyncSession,
    ctx: Context,
    invoice_ids: Sequence[str],
    numbering: Numbering,
    invoicing: Invoicing,
) -> None:
    """Tax drafts, give them their numbers, and make them open (or paid, when nothing is
    due), by a few statements for all of them. Taxes are quoted on the rounded lines for
    each customer as they are now; the seller and the buyer are kept with the invoice,
    which never changes again. The numbers are the tenant's next of the year, taken in
    this transaction: gapless. Any of them that is not a draft is refused."""
    rows = await repository.by_ids(session, ctx.tenant_id, invoice_ids, lock=True)
    found = {row.id for row in rows}
    missing = [invoice_id for invoice_id in invoice_ids if invoice_id not in found]
    if missing:
        raise InvoiceNotFound(f"no invoice {missing[0]!r}")
    for row in rows:
        if row.status != InvoiceStatus.DRAFT:
            raise InvoiceStateConflict(
                f"invoice {row.id} is {row.status}, not a draft",
                extra={"current_status": row.status},
            )
    buyers = await customers.by_ids(session, ctx.tenant_id, [row.customer_id for row in rows])
    seller = await seller_of(session, ctx.tenant_id, invoicing)
    line_updates: list[dict[str, Any]] = []
    invoice_updates: list[dict[str, Any]] = []
    numbered: dict[str, list[dict[str, Any]]] = {}  # per series, in order
    for row, invoice in zip(rows, await with_lines(session, rows), strict=True):
        buyer = buyers[row.customer_id]
        lines = [document_line(line) for line in invoice.lines]
        taxes, values = _finalized(
            lines, invoice.currency, buyer, seller, numbering, invoicing, ctx.now
        )
        for stored, tax in zip(invoice.lines, taxes, strict=True):
            stored_tax = (stored.tax_rate, stored.tax_minor, stored.tax_name, stored.tax_included)
            if stored_tax != tuple(tax.values()):  # untaxed lines stay as they were made
                line_updates.append({"invoice_id": row.id, "position": stored.position, **tax})
        values = {"id": row.id, "customer_id": row.customer_id, **values}
        numbered.setdefault(_series_of(buyer), []).append(values)
        invoice_updates.append(values)
    entries = await _number(session, ctx, numbering, numbered)
    await repository.update_lines(session, line_updates)
    await repository.update_invoices(
        session,
        [{k: v for k, v in values.items() if k != "customer_id"} for values in invoice_updates],
    )
    await eventlog.record_many(session, entries)


async def _number(
    session: AsyncSession,
    ctx: Context,
    numbering: Numbering,
    numbered: Mapping[str, list[dict[str, Any]]],
) -> list[eventlog.Entry]:
    """Give each invoice of each series the next number of the tenant's year, in order, a
    block taken at once; the entries their finalization writes."""
    entries = []
    year = ctx.now.year
    for series, block in numbered.items():
        last = await repository.next_numbers(session, ctx.tenant_id, series, year, len(block))
        for sequence, invoice in enumerate(block, start=last - len(block) + 1):
            invoice["number"] = numbering.number(year, sequence, test=series == "test")
            entries.append(_finalized_entry(ctx, invoice))
    return entries


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
    `amount_minor` is None, never more than is due. Paid in full, it is paid."""
    row = await locked(session, ctx.tenant_id, invoice_id)
    if row.status not in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
        raise InvoiceStateConflict(
            f"invoice {invoice_id} is {row.status}; payments are recorded against open "
            "or uncollectible invoices",
            extra={"current_status": row.status},
        )
    due = row.total_minor - row.paid_minor - row.credited_minor
    amount = due if amount_minor is None else amount_minor
    if amount <= 0 or amount > due:
        raise PaymentExceedsDue(
            f"{amount} minor units is not between 1 and the {due} due",
            errors=[FieldError(f"at most {due}", pointer="#/amount_minor")],
            extra={"due_minor": due},
        )
    when = paid_at or ctx.now
    payment_id = new_id("pay")
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
    settled = paid + row.credited_minor >= row.total_minor
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
    payment already recorded stays; a paid invoice is corrected by a credit note."""
    row = await locked(session, ctx.tenant_id, invoice_id)
    if row.status == InvoiceStatus.VOID:
        return await get(session, ctx.tenant_id, invoice_id)
    if row.status == InvoiceStatus.PAID or row.paid_minor:
        raise InvoiceStateConflict(
            f"invoice {invoice_id} has payments; correct it with a credit note",
            extra={"current_status": row.status},
        )
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
        {"invoice_id": invoice_id, "number": row.number, "reason": reason},
        customer_id=row.customer_id,
    )
    return await get(session, ctx.tenant_id, invoice_id)


async def mark_uncollectible(session: AsyncSession, ctx: Context, invoice_id: str) -> Invoice:
    row = await locked(session, ctx.tenant_id, invoice_id)
    if row.status == InvoiceStatus.UNCOLLECTIBLE:
        return await get(session, ctx.tenant_id, invoice_id)
    if row.status != InvoiceStatus.OPEN:
        raise InvoiceStateConflict(
            f"invoice {invoice_id} is {row.status}; only an open invoice is uncollectible",
            extra={"current_status": row.status},
        )
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
        {"invoice_id": invoice_id, "number": row.number},
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


@dataclass(frozen=True)
class Draft:
    id: str
    period_start: datetime
    period_end: datetime
    rating: Mapping[str, Any] | None


async def drafts_to_finalize(
    session: AsyncSession, tenant_id: str, invoice_ids: Sequence[str]
) -> list[Draft]:
    """The drafts, locked, with what their usage was rated by; those no longer drafts
    (another run finalized or voided them) left out."""
    rows = await repository.by_ids(session, tenant_id, invoice_ids, lock=True)
    return [
        Draft(row.id, row.period_start, row.period_end, row.rating)
        for row in rows
        if row.status == InvoiceStatus.DRAFT
    ]


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


async def locked(session: AsyncSession, tenant_id: str, invoice_id: str) -> Record:
    row = await repository.by_id(session, tenant_id, invoice_id, lock=True)
    if row is None:
        raise InvoiceNotFound(f"no invoice {invoice_id!r}")
    return row
