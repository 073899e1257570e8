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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.invoicing import repository
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.kit.errors import Conflict, FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_id
from billfold.kit.invariants import invariant
from billfold.money import to_minor

MAX_LINES: Final = 1_000  # lines an invoice may hold


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"


class InvoiceStateConflict(Conflict):
    code = "invoice_status_conflict"
    title = "The invoice's status does not allow this"


class PaymentExceedsDue(InvalidInput):
    status = 409
    code = "payment_exceeds_amount_due"
    title = "A payment larger than what is due"


@dataclass(frozen=True)
class Charge:
    """A line to be: what it is for and its precise amount in major units (negative for
    a credit). The invoice rounds it."""

    kind: str  # recurring, usage, proration, minimum, discount, credit
    description: str
    quantity: Decimal
    amount_precise: Decimal
    price: Mapping[str, Any] | None = None
    meter: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None


@dataclass(frozen=True)
class Numbering:
    """How finalized invoices are numbered and when they fall due."""

    prefix: str = "INV"
    due_days: int = 30

    def number(self, year: int, n: int) -> str:
        return f"{self.prefix}-{year}-{n:06d}"


@dataclass(frozen=True)
class Line:
    position: int
    kind: str
    description: str
    meter: str | None
    quantity: Decimal
    price: Mapping[str, Any] | None
    period_start: datetime | None
    period_end: datetime | None
    amount_precise: Decimal
    amount_minor: int
    tax_rate: Decimal
    tax_minor: int


@dataclass(frozen=True)
class Payment:
    id: str
    amount_minor: int
    method: str
    reference: str | None
    paid_at: datetime


@dataclass(frozen=True)
class Invoice:
    id: str
    number: str | None
    status: InvoiceStatus
    reason: str
    customer: str
    subscription_id: str | None
    currency: str
    period_start: datetime
    period_end: datetime
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    paid_minor: int
    credited_minor: int
    finalize_at: datetime
    finalized_at: datetime | None
    due_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    void_reason: str | None
    uncollectible_at: datetime | None
    created_at: datetime
    lines: tuple[Line, ...] = ()
    payments: tuple[Payment, ...] = field(default=())

    @property
    def due_minor(self) -> int:
        if self.status in (InvoiceStatus.VOID, InvoiceStatus.DRAFT):
            return 0
        return self.total_minor - self.paid_minor - self.credited_minor


def _line_rows(
    tenant_id: str,
    invoice_id: str,
    currency: str,
    charges: Sequence[Charge],
    start: int,
    now: datetime,
) -> list[dict[str, Any]]:
    rows = []
    for offset, charge in enumerate(charges):
        invariant(charge.amount_precise.is_finite(), "a charge is a finite amount")
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
                "amount_minor": to_minor(charge.amount_precise, currency),  # the one rounding
                "tax_rate": Decimal(0),
                "tax_minor": 0,
                "created_at": now,
            }
        )
    return rows


def _totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    subtotal = sum(int(row["amount_minor"]) for row in rows)
    tax = sum(int(row["tax_minor"]) for row in rows)
    return {"subtotal_minor": subtotal, "tax_minor": tax, "total_minor": subtotal + tax}


async def create_draft(
    session: AsyncSession,
    ctx: Context,
    *,
    customer_id: str,
    subscription_id: str | None,
    currency: str,
    reason: str,
    period_start: datetime,
    period_end: datetime,
    charges: Sequence[Charge],
    finalize_at: datetime,
    rating: Mapping[str, Any] | None = None,
) -> str | None:
    """A draft invoice of `charges`; None when the subscription already has one for the
    period (the unique constraint on (subscription, period) decides, whoever came
    first)."""
    invariant(len(charges) <= MAX_LINES, "an invoice holds a bounded number of lines")
    invoice_id = new_id("inv")
    rows = _line_rows(ctx.tenant_id, invoice_id, currency, charges, 1, ctx.now)
    totals = _totals(rows)
    try:
        async with session.begin_nested():
            await repository.insert_invoice(
                session,
                id=invoice_id,
                tenant_id=ctx.tenant_id,
                customer_id=customer_id,
                subscription_id=subscription_id,
                number=None,
                status=InvoiceStatus.DRAFT,
                reason=reason,
                currency=currency,
                period_start=period_start,
                period_end=period_end,
                finalize_at=finalize_at,
                rating=dict(rating) if rating is not None else None,
                created_at=ctx.now,
                updated_at=ctx.now,
                **totals,
            )
            await repository.insert_lines(session, rows)
    except IntegrityError:
        if subscription_id is None:
            raise
        if await repository.of_subscription_period(session, subscription_id, period_end) is None:
            raise
        return None
    await eventlog.record(
        session,
        ctx,
        "InvoiceCreated",
        {
            "invoice_id": invoice_id,
            "subscription_id": subscription_id,
            "reason": reason,
            "currency": currency,
            "period_start": period_start.isoformat(),
            "period_end": period_end.isoformat(),
            "total_minor": totals["total_minor"],
        },
        customer_id=customer_id,
    )
    return invoice_id


async def replace_charges(
    session: AsyncSession,
    ctx: Context,
    invoice_id: str,
    kinds: Sequence[str],
    charges: Sequence[Charge],
) -> None:
    """Re-rate a draft: its lines of `kinds` become `charges` (late usage lands here until
    the draft is finalized)."""
    row = await _locked(session, ctx.tenant_id, invoice_id)
    if row.status != InvoiceStatus.DRAFT:
        raise InvoiceStateConflict(
            f"invoice {invoice_id} is {row.status}; only a draft changes",
            extra={"current_status": row.status},
        )
    await repository.delete_lines(session, invoice_id, kinds)
    kept = await repository.lines_of(session, [invoice_id])
    start = max((line.position for line in kept), default=0) + 1
    rows = _line_rows(ctx.tenant_id, invoice_id, row.currency, charges, start, ctx.now)
    await repository.insert_lines(session, rows)
    totals = _totals([*(dict(line._mapping) for line in kept), *rows])
    await repository.update_invoice(session, invoice_id, updated_at=ctx.now, **totals)


async def finalize(
    session: AsyncSession, ctx: Context, invoice_id: str, numbering: Numbering
) -> Invoice:
    """Give a draft its number and make it open (or paid, when nothing is due). The
    number is the tenant's next of the year, taken in this transaction: gapless."""
    row = await _locked(session, ctx.tenant_id, invoice_id)
    if row.status != InvoiceStatus.DRAFT:
        raise InvoiceStateConflict(
            f"invoice {invoice_id} is {row.status}, not a draft",
            extra={"current_status": row.status},
        )
    invoice = await get(session, ctx.tenant_id, invoice_id)
    check(invoice)
    year = ctx.now.year
    number = numbering.number(year, await repository.next_number(session, ctx.tenant_id, year))
    settled = invoice.total_minor <= 0
    status = InvoiceStatus.PAID if settled else InvoiceStatus.OPEN
    await repository.update_invoice(
        session,
        invoice_id,
        number=number,
        status=status,
        finalized_at=ctx.now,
        due_at=ctx.now + timedelta(days=numbering.due_days),
        paid_at=ctx.now if settled else None,
        updated_at=ctx.now,
    )
    await eventlog.record(
        session,
        ctx,
        "InvoiceFinalized",
        {"invoice_id": invoice_id, "number": number, "total_minor": invoice.total_minor},
        customer_id=row.customer_id,
    )
    return await get(session, ctx.tenant_id, invoice_id)


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
    row = await _locked(session, ctx.tenant_id, invoice_id)
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
    row = await _locked(session, ctx.tenant_id, invoice_id)
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
    row = await _locked(session, ctx.tenant_id, invoice_id)
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
    (invoice,) = await _with_lines(session, [row])
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
    invoices = await _with_lines(session, rows)
    for invoice in invoices:
        check(invoice)
    return invoices


def check(invoice: Invoice) -> None:
    """The invariants, asserted before a write and after a read: the total is the sum of
    the rounded lines plus tax; every line was rounded once from its precise amount;
    nothing negative is due."""
    invariant(
        invoice.subtotal_minor == sum(line.amount_minor for line in invoice.lines),
        f"invoice {invoice.id}: the subtotal is the sum of its rounded lines",
    )
    invariant(
        invoice.tax_minor == sum(line.tax_minor for line in invoice.lines),
        f"invoice {invoice.id}: the tax is the sum of its lines' tax",
    )
    invariant(
        invoice.total_minor == invoice.subtotal_minor + invoice.tax_minor,
        f"invoice {invoice.id}: the total is the subtotal plus tax",
    )
    for line in invoice.lines:
        invariant(
            line.amount_minor == to_minor(line.amount_precise, invoice.currency),
            f"invoice {invoice.id}: line {line.position} is its precise amount rounded once",
        )
    if invoice.status is not InvoiceStatus.DRAFT:
        invariant(invoice.due_minor >= 0, f"invoice {invoice.id}: nothing negative is due")


async def add_pending(
    session: AsyncSession, ctx: Context, subscription_id: str, charge: Charge
) -> None:
    """A charge or credit waiting for the subscription's next invoice (a proration)."""
    await repository.insert_pending(
        session,
        id=new_id("pnd"),
        tenant_id=ctx.tenant_id,
        subscription_id=subscription_id,
        kind=charge.kind,
        description=charge.description,
        quantity=charge.quantity,
        price=dict(charge.price) if charge.price is not None else None,
        period_start=charge.period_start,
        period_end=charge.period_end,
        amount_precise=charge.amount_precise,
        created_at=ctx.now,
    )


async def take_pending(session: AsyncSession, subscription_id: str) -> list[Charge]:
    """The subscription's pending charges, removed: the caller puts them on an invoice in
    the same transaction."""
    rows = await repository.pending_of(session, subscription_id)
    await repository.delete_pending(session, [row.id for row in rows])
    # In the order they were made; a change's credit before its charge.
    rows.sort(key=lambda row: (row.created_at, row.amount_precise))
    return [
        Charge(
            kind=row.kind,
            description=row.description,
            quantity=row.quantity,
            amount_precise=row.amount_precise,
            price=row.price,
            period_start=row.period_start,
            period_end=row.period_end,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Draft:
    period_start: datetime
    period_end: datetime
    rating: Mapping[str, Any] | None


async def draft_to_finalize(session: AsyncSession, tenant_id: str, invoice_id: str) -> Draft | None:
    """The draft, locked, with what its usage was rated by; None if it is no longer a
    draft (another run finalized or voided it)."""
    row = await repository.by_id(session, tenant_id, invoice_id, lock=True)
    if row is None or row.status != InvoiceStatus.DRAFT:
        return None
    return Draft(row.period_start, row.period_end, row.rating)


async def due_drafts(
    session: AsyncSession, now: datetime, *, limit: int, tenant_id: str | None = None
) -> list[tuple[str, str]]:
    """(tenant, invoice) of the drafts whose grace has ended, oldest first."""
    rows = await repository.due_drafts(session, now, limit, tenant_id)
    return [(row.tenant_id, row.id) for row in rows]


async def _locked(session: AsyncSession, tenant_id: str, invoice_id: str) -> Record:
    row = await repository.by_id(session, tenant_id, invoice_id, lock=True)
    if row is None:
        raise InvoiceNotFound(f"no invoice {invoice_id!r}")
    return row


async def _with_lines(session: AsyncSession, rows: Sequence[Record]) -> list[Invoice]:
    ids = [row.id for row in rows]
    lines: dict[str, list[Line]] = {invoice_id: [] for invoice_id in ids}
    for line in await repository.lines_of(session, ids) if ids else []:
        lines[line.invoice_id].append(
            Line(
                position=line.position,
                kind=line.kind,
                description=line.description,
                meter=line.meter,
                quantity=line.quantity,
                price=line.price,
                period_start=line.period_start,
                period_end=line.period_end,
                amount_precise=line.amount_precise,
                amount_minor=line.amount_minor,
                tax_rate=line.tax_rate,
                tax_minor=line.tax_minor,
            )
        )
    payments: dict[str, list[Payment]] = {invoice_id: [] for invoice_id in ids}
    for payment in await repository.payments_of(session, ids) if ids else []:
        payments[payment.invoice_id].append(
            Payment(
                id=payment.id,
                amount_minor=payment.amount_minor,
                method=payment.method,
                reference=payment.reference,
                paid_at=payment.paid_at,
            )
        )
    return [
        Invoice(
            id=row.id,
            number=row.number,
            status=InvoiceStatus(row.status),
            reason=row.reason,
            customer=row.customer_external_id,
            subscription_id=row.subscription_id,
            currency=row.currency,
            period_start=row.period_start,
            period_end=row.period_end,
            subtotal_minor=row.subtotal_minor,
            tax_minor=row.tax_minor,
            total_minor=row.total_minor,
            paid_minor=row.paid_minor,
            credited_minor=row.credited_minor,
            finalize_at=row.finalize_at,
            finalized_at=row.finalized_at,
            due_at=row.due_at,
            paid_at=row.paid_at,
            voided_at=row.voided_at,
            void_reason=row.void_reason,
            uncollectible_at=row.uncollectible_at,
            created_at=row.created_at,
            lines=tuple(lines[row.id]),
            payments=tuple(payments[row.id]),
        )
        for row in rows
    ]
