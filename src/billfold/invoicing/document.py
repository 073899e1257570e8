"""The invoice as a value: who sells to whom, the lines, the payments, and the totals.

Rounding (docs/invoices.md): each line keeps its precise amount (`amount_precise`, major
units, as priced) beside `amount_minor`, that amount rounded once, half up, to the
currency's ISO 4217 minor units. Tax is computed on the rounded line, rounded once. The
totals are sums of the rounded lines, never a rounding of a precise sum.

A line's `amount_minor` is the amount as priced. With exclusive tax (the usual case) that
is the net amount and the tax comes on top; with inclusive tax (`tax_included`) it is the
gross amount and the tax is the part of it that the line's `net_minor` leaves. Either way
`subtotal_minor` is the sum of the lines' net amounts and `total_minor == subtotal_minor +
tax_minor`, which is also the sum of the lines' gross amounts.

Pure: no database, no clock. `build_invoice` computes the totals and `check` asserts
every invariant; a repository calls `check` before writing an invoice and after reading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from billfold.kit.invariants import invariant
from billfold.kit.money import MAX_MINOR, minor_units, to_minor

COUNTRY: Final = re.compile(r"^[A-Z]{2}$")  # ISO 3166-1 alpha-2
REGION: Final = re.compile(r"^[A-Z0-9]{1,3}$")  # the subdivision part of ISO 3166-2 (US-CA: CA)


class LineKind(StrEnum):
    RECURRING = "recurring"  # the plan's fee, billed in advance
    USAGE = "usage"  # a usage charge, billed in arrears
    PRORATION = "proration"  # a share of a fee after a change: a charge or a credit
    MINIMUM = "minimum"  # the true-up to a minimum commitment
    DISCOUNT = "discount"  # a coupon: negative, and it lowers the taxed amount
    CREDIT = "credit"  # an applied credit: negative, and it does not lower the tax
    # Credits beyond an invoice's charges, carried to the next invoice: positive, it
    # brings the invoice to zero (nothing negative is ever due).
    CARRIED = "carried"


# The sign each kind's amount may have: charges are never negative, discounts and credits
# never positive; a proration is either.
_SIGNS: Final = {
    LineKind.RECURRING: (0, 1),
    LineKind.USAGE: (0, 1),
    LineKind.MINIMUM: (0, 1),
    LineKind.PRORATION: (-1, 0, 1),
    LineKind.DISCOUNT: (-1, 0),
    LineKind.CREDIT: (-1, 0),
    LineKind.CARRIED: (0, 1),
}


class InvoiceStatus(StrEnum):
    DRAFT = "draft"  # no number yet; lines may still change
    OPEN = "open"  # finalized and numbered; never changes again, but for payments
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


@dataclass(frozen=True)
class Party:
    """The seller or the buyer, as the invoice names them."""

    name: str
    address: tuple[str, ...]
    country: str | None  # ISO 3166-1 alpha-2: "DE"; None: not known (no tax applies)
    region: str | None = None  # the subdivision, where taxes differ by it: "CA" (US-CA)
    tax_id: str | None = None  # as given, with its country prefix: "DE123456789"
    email: str | None = None

    def __post_init__(self) -> None:
        invariant(bool(self.name.strip()), "a party has a name")
        invariant(
            self.country is None or bool(COUNTRY.match(self.country)),
            "a country is an ISO 3166-1 alpha-2 code",
        )
        invariant(
            self.region is None or bool(REGION.match(self.region)),
            "a region is the subdivision part of an ISO 3166-2 code",
        )


@dataclass(frozen=True)
class Line:
    """One fee. Build it with `new_line`, which rounds the amount; a tax quote then fills
    in the tax (`with_tax`)."""

    description: str
    kind: LineKind
    quantity: Decimal
    amount_precise: Decimal  # major units, as priced, unrounded
    amount_minor: int  # amount_precise rounded once, half up, to minor units
    price: str | None = None  # the unit price or a reference to it: "29.00 / month"
    period_start: datetime | None = None
    period_end: datetime | None = None
    tax_rate: Decimal = Decimal(0)  # percent: 19 is 19 %
    tax_minor: int = 0  # on amount_minor, rounded once, half up
    tax_included: bool = False  # amount_minor is gross: the tax is inside it
    tax_name: str | None = None  # "VAT", "Sales tax"

    @property
    def net_minor(self) -> int:
        return self.amount_minor - self.tax_minor if self.tax_included else self.amount_minor

    @property
    def gross_minor(self) -> int:
        return self.amount_minor if self.tax_included else self.amount_minor + self.tax_minor

    def with_tax(self, rate: Decimal, tax_minor: int, *, included: bool, name: str | None) -> Line:
        return replace(
            self, tax_rate=rate, tax_minor=tax_minor, tax_included=included, tax_name=name
        )


def new_line(
    description: str,
    kind: LineKind,
    quantity: Decimal,
    amount_precise: Decimal,
    currency: str,
    *,
    price: str | None = None,
    period: tuple[datetime, datetime] | None = None,
) -> Line:
    """A line for `amount_precise` (major units, negative for a discount or a credit),
    rounded once to `currency`'s minor units, untaxed until a quote applies."""
    start, end = period if period is not None else (None, None)
    return Line(
        description=description,
        kind=kind,
        quantity=quantity,
        amount_precise=amount_precise,
        amount_minor=to_minor(amount_precise, currency),
        price=price,
        period_start=start,
        period_end=end,
    )


@dataclass(frozen=True)
class Payment:
    paid_at: datetime
    amount_minor: int
    method: str  # "manual", "card", ...
    reference: str | None = None  # the provider's id, a bank reference


@dataclass(frozen=True)
class Invoice:
    status: InvoiceStatus
    number: str | None  # None while a draft; gapless per tenant once finalized
    currency: str
    locale: str  # how the documents format money and dates: "de_DE"
    seller: Party
    buyer: Party
    period_start: datetime
    period_end: datetime
    issued_at: datetime | None  # None while a draft
    due_at: datetime | None
    lines: tuple[Line, ...]
    payments: tuple[Payment, ...]
    tax_note: str | None  # the reverse charge wording, when it applies
    subtotal_minor: int  # the lines' net amounts
    tax_minor: int
    total_minor: int  # subtotal_minor + tax_minor
    paid_minor: int
    credited_minor: int  # credit notes against it
    due_minor: int  # total_minor - paid_minor - credited_minor, never negative


def build_invoice(
    *,
    currency: str,
    locale: str,
    seller: Party,
    buyer: Party,
    period: tuple[datetime, datetime],
    lines: Iterable[Line],
    status: InvoiceStatus = InvoiceStatus.DRAFT,
    number: str | None = None,
    issued_at: datetime | None = None,
    due_at: datetime | None = None,
    payments: Iterable[Payment] = (),
    tax_note: str | None = None,
    credited_minor: int = 0,
) -> Invoice:
    """An invoice with its totals summed from its rounded lines, checked."""
    lines, payments = tuple(lines), tuple(payments)
    subtotal = sum(line.net_minor for line in lines)
    tax = sum(line.tax_minor for line in lines)
    paid = sum(payment.amount_minor for payment in payments)
    invoice = Invoice(
        status=status,
        number=number,
        currency=currency,
        locale=locale,
        seller=seller,
        buyer=buyer,
        period_start=period[0],
        period_end=period[1],
        issued_at=issued_at,
        due_at=due_at,
        lines=lines,
        payments=payments,
        tax_note=tax_note,
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=subtotal + tax,
        paid_minor=paid,
        credited_minor=credited_minor,
        due_minor=subtotal + tax - paid - credited_minor,
    )
    return check(invoice)


def check(invoice: Invoice) -> Invoice:
    """`invoice`, once every invariant holds; `InvariantViolation` otherwise (a bug or a
    corrupted row, never a user's mistake). Before writing and after reading."""
    minor_units(invoice.currency)  # an ISO 4217 currency with minor units
    # A subscription's first invoice bills ahead from its start: an empty period.
    _check_span(invoice.period_start, invoice.period_end, "the invoice's period", empty=True)
    for line in invoice.lines:
        _check_line(line, invoice.currency)
    for payment in invoice.payments:
        invariant(payment.amount_minor > 0, "a payment is positive")
        invariant(_aware(payment.paid_at), "a payment's time is aware")
    invariant(
        invoice.subtotal_minor == sum(line.net_minor for line in invoice.lines),
        "the subtotal is the sum of the rounded lines' net amounts",
    )
    invariant(
        invoice.tax_minor == sum(line.tax_minor for line in invoice.lines),
        "the tax is the sum of the lines' tax",
    )
    invariant(
        invoice.total_minor == invoice.subtotal_minor + invoice.tax_minor,
        "the total is the sum of the rounded lines plus tax",
    )
    invariant(
        invoice.paid_minor == sum(payment.amount_minor for payment in invoice.payments),
        "what is paid is the sum of the payments",
    )
    invariant(
        invoice.due_minor == invoice.total_minor - invoice.paid_minor - invoice.credited_minor,
        "what is due is the total less what is paid and what is credited",
    )
    invariant(invoice.due_minor >= 0, "nothing negative is due")
    invariant(invoice.credited_minor >= 0, "a credit note credits a positive amount")
    invariant(abs(invoice.total_minor) <= MAX_MINOR, "a total fits in 64 bits")
    _check_status(invoice)
    return invoice


def _check_line(line: Line, currency: str) -> None:
    invariant(bool(line.description.strip()), "a line has a description")
    invariant(line.quantity.is_finite(), "a quantity is finite")
    invariant(
        line.amount_minor == to_minor(line.amount_precise, currency),
        "a line's amount is its precise amount rounded once, half up, to minor units",
    )
    sign = (line.amount_minor > 0) - (line.amount_minor < 0)
    invariant(sign in _SIGNS[line.kind], f"a {line.kind} line's amount has its sign")
    invariant(0 <= line.tax_rate <= 100, "a tax rate is a percentage from 0 to 100")
    invariant(
        line.tax_minor == 0 or (line.tax_minor > 0) == (line.amount_minor > 0),
        "a line's tax has its amount's sign",
    )
    invariant(abs(line.tax_minor) <= abs(line.amount_minor), "a tax is at most the amount")
    start, end = line.period_start, line.period_end
    if start is None or end is None:
        invariant(start is None and end is None, "a line's period has both ends or neither")
    else:
        _check_span(start, end, "a line's period")


def _check_status(invoice: Invoice) -> None:
    draft = invoice.status is InvoiceStatus.DRAFT
    invariant(draft == (invoice.number is None), "an invoice has a number once finalized")
    invariant(draft == (invoice.issued_at is None), "an invoice is issued once finalized")
    invariant(not (draft and invoice.payments), "a draft has no payments")
    if invoice.status is InvoiceStatus.PAID:
        invariant(invoice.due_minor == 0, "a paid invoice has nothing due")
    for moment in (invoice.issued_at, invoice.due_at):
        invariant(moment is None or _aware(moment), "an invoice's times are aware")
    if invoice.issued_at is not None and invoice.due_at is not None:
        invariant(invoice.due_at >= invoice.issued_at, "an invoice is due after it is issued")


def _check_span(start: datetime, end: datetime, what: str, *, empty: bool = False) -> None:
    invariant(_aware(start) and _aware(end), f"{what} is in aware times")
    invariant(start <= end if empty else start < end, f"{what} ends after it starts")


def _aware(moment: datetime) -> bool:
    return moment.utcoffset() is not None
