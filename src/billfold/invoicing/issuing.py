"""Issuing invoices: drafts made from charges (one or a batch of them by a few
statements), re-rated while they are drafts, and finalized (taxed, numbered gapless per
tenant, series and year, and opened) one or a batch at a time. Each line is rounded
once, half up, in the currency's minor units, its precise amount kept beside it; totals
are sums of rounded lines. Reading, paying and voiding are in `service`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers import service as customers
from billfold.invoicing import document, postings, repository
from billfold.invoicing.document import InvoiceStatus, LineKind, Party, new_line
from billfold.invoicing.records import (
    Charge,
    Invoicing,
    Numbering,
    buyer_of,
    document_line,
    party_json,
    with_lines,
)
from billfold.invoicing.service import (
    InvoiceNotFound,
    InvoiceStateConflict,
    locked,
    seller_of,
)
from billfold.invoicing.taxes import apply_quote
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.ids import new_id
from billfold.kit.invariants import invariant

MAX_LINES: Final = 1_000  # lines an invoice may hold


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
    await postings.post_many(
        session,
        ctx,
        [
            _posted(invoice, test=_series_of(buyers[invoice["customer_id"]]) == "test")
            for invoice in invoice_rows
            if invoice["posted_at"]
        ],
    )
    await eventlog.record_many(session, entries)
    return [invoice["id"] for invoice in invoice_rows]


def _posted(invoice: Mapping[str, Any], *, test: bool) -> list[postings.Leg]:
    """What an invoice's finalization posts (in its transaction, with its batch's): to
    the test book for a test-clock customer (decision 0046)."""
    return postings.finalized(
        invoice["id"],
        postings.Book(invoice["customer_id"], invoice["currency"], test),
        invoice["subtotal_minor"],
        invoice["tax_minor"],
    )


# What a draft holds until it is finalized.
_DRAFT: Final[Mapping[str, Any]] = {
    "number": None,
    "status": InvoiceStatus.DRAFT,
    "seller": None,
    "buyer": None,
    "locale": None,
    "tax_note": None,
    "finalized_at": None,
    "posted_at": None,
    "due_at": None,
    "paid_at": None,
}


def _series_of(customer: customers.Customer) -> str:
    """A test-clock customer's invoices are numbered apart from the real ones, and post
    to the test book."""
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
        "posted_at": now,  # with the finalization, in its transaction
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


def _finalized_entry(ctx: Context, invoice: Mapping[str, Any], *, test: bool) -> eventlog.Entry:
    return eventlog.Entry(
        ctx,
        "InvoiceFinalized",
        {
            "invoice_id": invoice["id"],
            "number": invoice["number"],
            "total_minor": invoice["total_minor"],
            "tax_minor": invoice["tax_minor"],
            "currency": invoice["currency"],
            "transfer_ids": postings.moved(_posted(invoice, test=test)),
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
    tests: dict[str, bool] = {}  # invoice id -> posts to the test book
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
        values = {"id": row.id, "customer_id": row.customer_id, "currency": row.currency, **values}
        numbered.setdefault(_series_of(buyer), []).append(values)
        invoice_updates.append(values)
        tests[row.id] = _series_of(buyer) == "test"
    entries = await _number(session, ctx, numbering, numbered)
    await repository.update_lines(session, line_updates)
    await repository.update_invoices(
        session,
        [
            {k: v for k, v in values.items() if k not in ("customer_id", "currency")}
            for values in invoice_updates
        ],
    )
    await postings.post_many(
        session,
        ctx,
        [_posted(values, test=tests[values["id"]]) for values in invoice_updates],
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
            entries.append(_finalized_entry(ctx, invoice, test=series == "test"))
    return entries


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
