"""Typed builders for the invoicing tests: parties, lines and invoices in one line each."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from billfold.invoicing import (
    Invoice,
    InvoiceStatus,
    Line,
    LineKind,
    Party,
    Payment,
    build_invoice,
    new_line,
)

JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
ISSUED = datetime(2026, 2, 1, 6, tzinfo=UTC)
DUE = datetime(2026, 2, 15, tzinfo=UTC)
SELLER = Party(
    "Billfold GmbH",
    ("Hauptstraße 1", "10115 Berlin"),
    "DE",
    tax_id="DE123456789",
    email="billing@billfold.example",
)


def buyer(country: str = "DE", *, region: str | None = None, tax_id: str | None = None) -> Party:
    return Party("Ada Größe", ("Unter den Linden 5",), country, region=region, tax_id=tax_id)


def charge(
    amount: str,
    currency: str = "EUR",
    *,
    kind: LineKind = LineKind.RECURRING,
    description: str = "Pro plan",
    quantity: str = "1",
) -> Line:
    return new_line(description, kind, Decimal(quantity), Decimal(amount), currency, period=JANUARY)


def invoice(
    lines: Iterable[Line],
    *,
    currency: str = "EUR",
    locale: str = "de_DE",
    buyer_party: Party | None = None,
    payments: Iterable[Payment] = (),
    status: InvoiceStatus = InvoiceStatus.OPEN,
    tax_note: str | None = None,
) -> Invoice:
    """A finalized invoice for January (a draft when `status` says so)."""
    draft = status is InvoiceStatus.DRAFT
    return build_invoice(
        currency=currency,
        locale=locale,
        seller=SELLER,
        buyer=buyer_party or buyer(),
        period=JANUARY,
        lines=lines,
        status=status,
        number=None if draft else "INV-2026-000123",
        issued_at=None if draft else ISSUED,
        due_at=None if draft else DUE,
        payments=payments,
        tax_note=tax_note,
    )
