"""Invoicing: the invoice as a value, its taxes, and its documents. Pure: no database, no
HTTP, no clock (period close and the API build on it).

- `document`: `Party`, `Line` (`new_line` rounds once), `Payment`, `Invoice`,
  `build_invoice` (totals from the rounded lines) and `check` (the invariants);
- `taxes`: the `TaxProvider` port, the built-in provider and its configuration,
  `load_provider("builtin" | "package.module:factory", config)`;
- `render`: the invoice and its receipt as HTML and PDF, for the invoice's locale.

docs/invoices.md tells how rounding, taxes and rendering fit together.
"""

from billfold.invoicing.document import (
    Invoice,
    InvoiceStatus,
    Line,
    LineKind,
    Party,
    Payment,
    build_invoice,
    check,
    new_line,
)
from billfold.invoicing.formatting import UnknownLocale
from billfold.invoicing.render import (
    Document,
    InvoiceNotPaid,
    PdfUnavailable,
    render_html,
    render_pdf,
)
from billfold.invoicing.taxes import (
    BuiltinTaxProvider,
    LineTax,
    TaxConfig,
    TaxConfigError,
    TaxProvider,
    TaxQuote,
    TaxRate,
    apply_quote,
    load_provider,
    parse_tax_config,
)

__all__ = [
    "BuiltinTaxProvider",
    "Document",
    "Invoice",
    "InvoiceNotPaid",
    "InvoiceStatus",
    "Line",
    "LineKind",
    "LineTax",
    "Party",
    "Payment",
    "PdfUnavailable",
    "TaxConfig",
    "TaxConfigError",
    "TaxProvider",
    "TaxQuote",
    "TaxRate",
    "UnknownLocale",
    "apply_quote",
    "build_invoice",
    "check",
    "load_provider",
    "new_line",
    "parse_tax_config",
    "render_html",
    "render_pdf",
]
