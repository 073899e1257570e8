"""The invoice and its receipt as HTML and PDF: amounts written for the invoice's locale in
the currency's ISO 4217 minor units, and a PDF whose text reads back with the right total."""

from __future__ import annotations

import html
import io
import logging
import re
from collections.abc import Sequence

import pytest
from pypdf import PdfReader

from billfold.invoicing import (
    BuiltinTaxProvider,
    Document,
    Invoice,
    InvoiceStatus,
    Line,
    LineKind,
    Party,
    Payment,
    apply_quote,
    parse_tax_config,
    render_html,
    render_pdf,
)
from billfold.invoicing.formatting import UnknownLocale
from billfold.invoicing.render import InvoiceNotPaid
from tests.invoicing.examples import ISSUED, SELLER, buyer, charge, invoice

TAXES = parse_tax_config(
    {
        "reverse_charge": "EU",
        "rates": [
            {"country": "DE", "rate": "19", "name": "VAT"},
            {"country": "JP", "rate": "10", "name": "Consumption tax"},
            {"country": "US", "region": "CA", "rate": "7.25", "name": "Sales tax"},
        ],
    }
)


def taxed_invoice(
    lines: Sequence[Line],
    party: Party,
    *,
    currency: str,
    locale: str,
    payments: Sequence[Payment] = (),
    status: InvoiceStatus = InvoiceStatus.OPEN,
) -> Invoice:
    quote = BuiltinTaxProvider(TAXES).quote(SELLER, party, currency, lines)
    return invoice(
        apply_quote(lines, quote),
        currency=currency,
        locale=locale,
        buyer_party=party,
        payments=payments,
        status=status,
        tax_note=quote.note,
    )


def text_of(text: str) -> str:
    """Runs of whitespace (no-break and narrow spaces too) as one space."""
    return " ".join(text.split())


def visible(page: str) -> str:
    """The text an HTML page shows, its tags taken out, whitespace as in `text_of`."""
    return text_of(html.unescape(re.sub(r"<[^>]*>", " ", page.split("</head>")[1])))


def test_html_in_en_us_and_usd() -> None:
    party = buyer("US", region="CA")
    page = render_html(
        taxed_invoice([charge("1234.5", "USD")], party, currency="USD", locale="en_US")
    )
    text = visible(page)
    # 1,234.50 x 7.25 % = 89.50125 -> 89.50
    for shown in (
        "Pro plan Jan 1 – 31, 2026 1 7.25% $1,234.50",
        "Subtotal $1,234.50 Sales tax 7.25% on $1,234.50 $89.50 Total $1,324.00",
        "Date of issue Feb 1, 2026 Date due Feb 15, 2026",
    ):
        assert shown in text
    assert "CA, United States" in page


def test_html_in_de_de_and_eur() -> None:
    lines = [
        charge("1234.50"),
        charge("0.004", kind=LineKind.USAGE, description="AI tokens", quantity="12345.5"),
    ]
    page = render_html(taxed_invoice(lines, buyer("DE"), currency="EUR", locale="de_DE"))
    text = visible(page)
    # 1.234,50 x 19 % = 234,555 -> 234,56 (half up); the usage line rounds to 0,00
    for shown in (
        "Pro plan 1.–31. Jan. 2026 1 19 % 1.234,50 €",
        "AI tokens 1.–31. Jan. 2026 12.345,5 19 % 0,00 €",
        "Subtotal 1.234,50 € VAT 19 % on 1.234,50 € 234,56 € Total 1.469,06 €",
        "Date of issue 01.02.2026",
        "10115 Berlin Deutschland",
    ):
        assert shown in text
    assert "1.469,06\xa0€" in page  # the no-break space CLDR puts before the symbol


def test_html_in_ja_jp_and_jpy_with_no_minor_units() -> None:
    page = render_html(
        taxed_invoice([charge("1234", "JPY")], buyer("JP"), currency="JPY", locale="ja_JP")
    )
    # 1,234 x 10 % = 123.4 -> 123
    for shown in ("￥1,234", "￥123", "￥1,357", "2026/02/01", "日本"):
        assert shown in page
    assert "￥1,234." not in page


def test_html_with_three_minor_units_even_where_cldr_shows_none() -> None:
    kwd = render_html(
        taxed_invoice([charge("1234.5675", "KWD")], buyer("KW"), currency="KWD", locale="en_US")
    )
    assert "KWD1,234.568" in kwd  # rounded once, half up, to ISO's 3 digits
    # CLDR gives the Iraqi dinar 0 digits, ISO 4217 3: babel alone would write IQD1,235
    iqd = render_html(
        taxed_invoice([charge("1234.5675", "IQD")], buyer("IQ"), currency="IQD", locale="en_US")
    )
    assert "IQD1,234.568" in iqd
    assert "IQD1,235" not in iqd


def test_inclusive_prices_show_the_total_excluding_tax() -> None:
    taxes = parse_tax_config(
        {"inclusive": True, "rates": [{"country": "DE", "rate": "19", "name": "MwSt"}]}
    )
    lines = [charge("11.90")]
    quote = BuiltinTaxProvider(taxes).quote(SELLER, buyer("DE"), "EUR", lines)
    page = render_html(invoice(apply_quote(lines, quote)))
    assert "Amount (incl. tax)" in page
    assert "Total excluding tax" in page
    assert "10,00\xa0€" in page
    assert "1,90\xa0€" in page


def test_reverse_charge_carries_its_note_and_the_buyers_tax_id() -> None:
    party = buyer("FR", tax_id="FR12345678901")
    page = render_html(taxed_invoice([charge("100")], party, currency="EUR", locale="de_DE"))
    assert "Reverse charge: the customer accounts for the VAT" in page
    assert "Tax ID FR12345678901" in page
    assert "Tax ID DE123456789" in page


def test_text_from_the_parties_is_escaped() -> None:
    party = Party('<img src="http://tracker.example/x">', ("<b>1 Main St</b>",), "US")
    page = render_html(taxed_invoice([charge("1", "USD")], party, currency="USD", locale="en_US"))
    assert "<img" not in page
    assert "<b>" not in page
    assert "&lt;img src=&#34;http://tracker.example/x&#34;&gt;" in page


def test_a_receipt_exists_once_paid() -> None:
    lines = [charge("29.00", "USD")]
    party = buyer("US", region="NY")
    unpaid = taxed_invoice(lines, party, currency="USD", locale="en_US")
    with pytest.raises(InvoiceNotPaid):
        render_html(unpaid, Document.RECEIPT)
    paid = taxed_invoice(
        lines,
        party,
        currency="USD",
        locale="en_US",
        payments=[Payment(ISSUED, 2900, "card", "ch_123")],
        status=InvoiceStatus.PAID,
    )
    receipt = visible(render_html(paid, Document.RECEIPT))
    for shown in (
        "Receipt INV-2026-000123",
        "Date paid Feb 1, 2026",
        "card ch_123 $29.00",
        "Amount due $0.00",
    ):
        assert shown in receipt
    assert "Date due" not in receipt


def test_a_draft_says_so() -> None:
    page = visible(render_html(invoice([charge("5")], status=InvoiceStatus.DRAFT)))
    assert "Invoice draft draft" in page
    assert "Date of issue" not in page


def test_an_unknown_locale_is_refused() -> None:
    with pytest.raises(UnknownLocale) as refused:
        render_html(invoice([charge("5")], locale="xx_YY"))
    assert refused.value.code == "unknown_locale"


def test_the_pdf_reads_back_with_its_total() -> None:
    lines = [
        charge("1234.50"),
        *(charge("0.25", kind=LineKind.USAGE, description=f"Usage {n}") for n in range(19)),
    ]
    built = taxed_invoice(lines, buyer("DE"), currency="EUR", locale="de_DE")
    assert (built.subtotal_minor, built.tax_minor, built.total_minor) == (123925, 23551, 147476)
    pdf = render_pdf(built)
    reader = PdfReader(io.BytesIO(pdf))
    text = text_of("\n".join(page.extract_text() for page in reader.pages))
    # 1.234,50 x 19 % = 234,555 -> 234,56, and 19 x (0,25 x 19 % = 0,0475 -> 0,05)
    for shown in (
        "Invoice INV-2026-000123",
        "Total 1.474,76 €",
        "Amount due 1.474,76 €",
        "Usage 18",
    ):
        assert shown in text
    assert reader.metadata is not None
    assert reader.metadata.title == "Invoice INV-2026-000123"


def test_the_receipt_pdf_says_it_is_paid() -> None:
    party = buyer("DE")
    lines = [charge("10.00")]
    paid = taxed_invoice(
        lines,
        party,
        currency="EUR",
        locale="de_DE",
        payments=[Payment(ISSUED, 1190, "manual", "bank transfer")],
        status=InvoiceStatus.PAID,
    )
    text = text_of(
        PdfReader(io.BytesIO(render_pdf(paid, Document.RECEIPT))).pages[0].extract_text()
    )
    for shown in ("Receipt INV-2026-000123", "Amount paid 11,90 €", "Amount due 0,00 €"):
        assert shown in text
    assert paid.total_minor == 1190


def test_a_pdf_leaves_the_log_quiet(caplog: pytest.LogCaptureFixture) -> None:
    # WeasyPrint logs eight steps a PDF and fontTools a dozen lines of subsetting, at INFO
    built = invoice([charge("10.00")])
    with caplog.at_level(logging.INFO):
        render_pdf(built)
        render_pdf(built)
    noisy = [r for r in caplog.records if r.name.startswith(("weasyprint.progress", "fontTools"))]
    assert noisy == []
    harfbuzz = [r for r in caplog.records if "HarfBuzz" in r.getMessage()]
    assert len(harfbuzz) <= 1  # once a process, where the subsetter is missing
