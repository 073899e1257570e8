"""An invoice's documents: the invoice itself, and a receipt once it is paid, as HTML and
as PDF. One Jinja2 template gives the HTML; WeasyPrint lays the same HTML out as the PDF,
so the two never differ (docs/decisions/0033).

Every figure is written in Python first (`billfold.invoicing.formatting`: babel, ISO 4217
minor units), so the template only places text. Rendering reads no clock and fetches
nothing: the stylesheet is inlined, and the PDF's URL fetcher refuses every URL.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import ModuleType

import jinja2
from babel import Locale

from billfold.invoicing import formatting
from billfold.invoicing.document import Invoice, InvoiceStatus, Line, Party, check
from billfold.kit.errors import BillfoldError, Conflict
from billfold.kit.invariants import invariant


class Document(StrEnum):
    INVOICE = "invoice"
    RECEIPT = "receipt"  # only once paid


class InvoiceNotPaid(Conflict):
    code = "invoice_not_paid"
    title = "A receipt exists once the invoice is paid"


class PdfUnavailable(BillfoldError):
    status = 503
    code = "pdf_unavailable"
    title = "PDF rendering is not available on this server"


def render_html(invoice: Invoice, document: Document = Document.INVOICE) -> str:
    """The document as a standalone HTML page (its stylesheet inline)."""
    check(invoice)
    if document is Document.RECEIPT and invoice.status is not InvoiceStatus.PAID:
        raise InvoiceNotPaid(f"the invoice is {invoice.status}, not paid: it has no receipt yet")
    return _templates().get_template("invoice.html").render(doc=_view(invoice, document))


def render_pdf(invoice: Invoice, document: Document = Document.INVOICE) -> bytes:
    """The same document as a PDF (A4), laid out from its HTML by WeasyPrint. CPU-bound
    (about a third of a second for 20 lines): call it off the event loop."""
    html = render_html(invoice, document)
    weasyprint = _weasyprint()
    fetcher = weasyprint.URLFetcher(allowed_protocols=())  # the page links to nothing
    pdf = weasyprint.HTML(string=html, url_fetcher=fetcher).write_pdf()
    invariant(isinstance(pdf, bytes), "WeasyPrint gives the PDF as bytes")
    return bytes(pdf)


@functools.cache
def _weasyprint() -> ModuleType:
    """WeasyPrint, imported on first use: it loads Pango (a system library, ~0.5 s), which
    nothing but a PDF needs. WeasyPrint 70 warns at import when HarfBuzz's subsetter is
    missing (it then subsets fonts with fontTools, which is slower but the same PDF);
    that warning alone is silenced, as it is about WeasyPrint's future, not ours."""
    # Each PDF would log WeasyPrint's eight progress steps and fontTools' subsetting
    # (INFO, a dozen lines), and warn again that HarfBuzz's subsetter is missing: the
    # steps and the subsetting are left out, the warning is logged once.
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="HarfBuzz-Subset will be required", category=DeprecationWarning
        )
        try:
            import weasyprint
        except OSError as error:  # Pango missing: cffi cannot load it
            raise PdfUnavailable(
                f"rendering a PDF needs Pango 1.44 or newer ({error}); on Debian or Ubuntu: "
                "apt-get install libpango-1.0-0 libpangoft2-1.0-0"
            ) from error
    logging.getLogger("weasyprint").addFilter(_Once("Using fontTools instead of HarfBuzz"))
    module: ModuleType = weasyprint
    return module


class _Once(logging.Filter):
    """Lets the first record whose message starts with `prefix` through, and no other."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        seen, self.seen = self.seen, True
        return not seen


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("billfold.invoicing", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class PartyView:
    name: str
    address: tuple[str, ...]
    country: str | None
    tax_id: str | None
    email: str | None


@dataclass(frozen=True)
class LineView:
    description: str
    price: str | None
    period: str | None
    quantity: str
    tax_rate: str
    amount: str


@dataclass(frozen=True)
class PaymentView:
    day: str
    method: str
    reference: str | None
    amount: str


@dataclass(frozen=True)
class View:
    """Everything the template shows, already written as text."""

    document: str
    title: str
    lang: str
    number: str | None
    status: str
    issued: str | None
    due: str | None
    period: str
    seller: PartyView
    buyer: PartyView
    tax_included: bool
    lines: tuple[LineView, ...]
    totals: tuple[tuple[str, str], ...]  # (label, amount): subtotal, each tax, total
    paid: str
    credited: str | None  # credit notes, when there are some
    amount_due: str
    payments: tuple[PaymentView, ...]
    tax_note: str | None


def _view(invoice: Invoice, document: Document) -> View:
    where = formatting.locale(invoice.locale)

    def money(amount_minor: int) -> str:
        return formatting.money(amount_minor, invoice.currency, where)

    included = any(line.tax_included for line in invoice.lines)
    subtotal_label = "Total excluding tax" if included else "Subtotal"
    totals = [
        (subtotal_label, money(invoice.subtotal_minor)),
        *((label, money(tax)) for label, tax in _taxes(invoice.lines, where, money)),
        ("Total", money(invoice.total_minor)),
    ]
    number = invoice.number
    return View(
        document=document.value,
        title=f"{'Receipt' if document is Document.RECEIPT else 'Invoice'} {number or 'draft'}",
        lang=str(where).replace("_", "-"),
        number=number,
        status=invoice.status.value,
        issued=formatting.day(invoice.issued_at, where) if invoice.issued_at else None,
        due=formatting.day(invoice.due_at, where) if invoice.due_at else None,
        period=formatting.period(invoice.period_start, invoice.period_end, where),
        seller=_party(invoice.seller, where),
        buyer=_party(invoice.buyer, where),
        tax_included=included,
        lines=tuple(_line(line, where, money) for line in invoice.lines),
        totals=tuple(totals),
        paid=money(invoice.paid_minor),
        credited=money(invoice.credited_minor) if invoice.credited_minor else None,
        amount_due=money(invoice.due_minor),
        payments=tuple(
            PaymentView(
                day=formatting.day(payment.paid_at, where),
                method=payment.method,
                reference=payment.reference,
                amount=money(payment.amount_minor),
            )
            for payment in invoice.payments
        ),
        tax_note=invoice.tax_note,
    )


def _party(party: Party, where: Locale) -> PartyView:
    region = f"{party.region}, " if party.region else ""
    country = formatting.country(party.country, where) if party.country else None
    return PartyView(
        name=party.name,
        address=party.address,
        country=region + country if country else None,
        tax_id=party.tax_id,
        email=party.email,
    )


def _line(line: Line, where: Locale, money: Callable[[int], str]) -> LineView:
    period = None
    if line.period_start is not None and line.period_end is not None:
        period = formatting.period(line.period_start, line.period_end, where)
    return LineView(
        description=line.description,
        price=line.price,
        period=period,
        quantity=formatting.quantity(line.quantity, where),
        tax_rate=formatting.rate(line.tax_rate, where),
        amount=money(line.amount_minor),
    )


def _taxes(
    lines: tuple[Line, ...], where: Locale, money: Callable[[int], str]
) -> Iterator[tuple[str, int]]:
    """One row per tax and rate, with the net amount it was charged on: "VAT 19 % on
    1.234,56 €". A single "Tax" row when no line names a tax (untaxed, reverse charge)."""
    groups: dict[tuple[str, Decimal], tuple[int, int]] = {}
    for line in lines:
        if line.tax_name is not None:
            base, tax = groups.get((line.tax_name, line.tax_rate), (0, 0))
            groups[(line.tax_name, line.tax_rate)] = (base + line.net_minor, tax + line.tax_minor)
    if not groups:
        yield "Tax", sum(line.tax_minor for line in lines)
    for (name, percent), (base, tax) in groups.items():
        yield f"{name} {formatting.rate(percent, where)} on {money(base)}", tax
