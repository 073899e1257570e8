"""Invoices as the database keeps them (`Invoice`, `Line`, `Payment`), the charges
drafts are made of, and the stored invoice as the document that is checked and rendered
(`as_document`, `check`: the invariants live once, in `billfold.invoicing.document`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers.service import Customer
from billfold.invoicing import document, repository
from billfold.invoicing.document import InvoiceStatus, LineKind, Party
from billfold.invoicing.taxes import BuiltinTaxProvider, TaxConfig, TaxProvider
from billfold.kit.db import Record


@dataclass(frozen=True)
class Invoicing:
    """Who sells, in which locale documents are written, and the tax provider; wired at
    the edge from the invoicing file (`billfold.invoicing.deps`)."""

    seller: Party | None = None  # None: the tenant, by its name, with no address
    locale: str = "en_US"
    taxes: TaxProvider = field(default_factory=lambda: BuiltinTaxProvider(TaxConfig()))


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

    def number(self, year: int, n: int, *, test: bool = False) -> str:
        """`INV-2026-000123`; a test-clock customer's invoices are numbered apart,
        `TEST-INV-2026-000001`, and never take a number of the real series."""
        return f"{'TEST-' if test else ''}{self.prefix}-{year}-{n:06d}"


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
    tax_name: str | None = None
    tax_included: bool = False


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
    seller: Mapping[str, Any] | None = None  # as at finalization
    buyer: Mapping[str, Any] | None = None
    locale: str | None = None
    tax_note: str | None = None
    refunded_minor: int = 0  # of what was paid, given back by credit notes
    posted_at: datetime | None = None  # its finalization, on the ledger

    @property
    def due_minor(self) -> int:
        if self.status in (InvoiceStatus.VOID, InvoiceStatus.DRAFT):
            return 0
        return self.total_minor - self.paid_minor - self.net_credited_minor

    @property
    def net_credited_minor(self) -> int:
        """What credit notes took off what is due: all they credited less what they gave
        back of what was paid."""
        return self.credited_minor - self.refunded_minor


def buyer_of(customer: Customer) -> Party:
    """The customer as an invoice names them: their billing details as they are now."""
    details = customer.billing
    return Party(
        name=customer.name or customer.external_id,
        address=details.address,
        country=details.country,
        region=details.region,
        tax_id=details.tax_id,
        email=customer.email,
    )


def party_json(party: Party) -> dict[str, Any]:
    return {**party.__dict__, "address": list(party.address)}


def _party(stored: Mapping[str, Any] | None, given: Party | None, fallback: str) -> Party:
    """The party an invoice was finalized with, else the one given, else a placeholder."""
    if stored is not None:
        return Party(**{**stored, "address": tuple(stored.get("address") or ())})
    return given or Party(name=fallback, address=(), country=None)


def as_document(
    invoice: Invoice,
    *,
    seller: Party | None = None,
    buyer: Party | None = None,
    locale: str | None = None,
) -> document.Invoice:
    """The stored invoice as the document that is rendered and checked. A finalized
    invoice is written with the parties it was finalized with; a draft with the ones
    given (or placeholders, for checking)."""
    return document.build_invoice(
        currency=invoice.currency,
        locale=invoice.locale or locale or "en_US",
        seller=_party(invoice.seller, seller, "(seller)"),
        buyer=_party(invoice.buyer, buyer, invoice.customer),
        period=(invoice.period_start, invoice.period_end),
        lines=[document_line(line) for line in invoice.lines],
        status=invoice.status,
        number=invoice.number,
        issued_at=invoice.finalized_at,
        due_at=invoice.due_at,
        payments=[
            document.Payment(p.paid_at, p.amount_minor, p.method, p.reference)
            for p in invoice.payments
        ],
        tax_note=invoice.tax_note,
        credited_minor=invoice.net_credited_minor,
    )


def document_line(line: Line) -> document.Line:
    return document.Line(
        description=line.description,
        kind=LineKind(line.kind),
        quantity=line.quantity,
        amount_precise=line.amount_precise,
        amount_minor=line.amount_minor,
        price=_price_text(line.price),
        period_start=line.period_start,
        period_end=line.period_end,
        tax_rate=line.tax_rate,
        tax_minor=line.tax_minor,
        tax_included=line.tax_included,
        tax_name=line.tax_name,
    )


def _price_text(price: Mapping[str, Any] | None) -> str | None:
    """A price as a document shows it: its amount for the simple models."""
    if price is None:
        return None
    if price.get("model") == "flat":
        return str(price.get("amount"))
    if price.get("model") == "per_unit":
        return f"{price.get('unit_amount')} / unit"
    return str(price.get("model"))


def check(invoice: Invoice) -> None:
    """The invariants, asserted before a write and after a read (`document.check`): the
    total is the sum of the rounded lines plus tax; every line was rounded once from
    its precise amount; nothing negative is due; a draft has no number."""
    document.check(as_document(invoice))


async def with_lines(session: AsyncSession, rows: Sequence[Record]) -> list[Invoice]:
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
                tax_name=line.tax_name,
                tax_included=bool(line.tax_included),
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
            seller=row.seller,
            buyer=row.buyer,
            locale=row.locale,
            tax_note=row.tax_note,
            refunded_minor=row.refunded_minor,
            posted_at=row.posted_at,
        )
        for row in rows
    ]
