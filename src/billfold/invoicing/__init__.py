"""Invoicing: the invoice as a value, and its taxes. Pure: no database, no
HTTP, no clock (period close and the API build on it).

- `document`: `Party`, `Line` (`new_line` rounds once), `Payment`, `Invoice`,
  `build_invoice` (totals from the rounded lines) and `check` (the invariants);
- `taxes`: the `TaxProvider` port, the built-in provider and its configuration,
  `load_provider("builtin" | "package.module:factory", config)`;

docs/decisions/0034 tells why taxes work as they do.
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
    "Invoice",
    "InvoiceStatus",
    "Line",
    "LineKind",
    "LineTax",
    "Party",
    "Payment",
    "TaxConfig",
    "TaxConfigError",
    "TaxProvider",
    "TaxQuote",
    "TaxRate",
    "apply_quote",
    "build_invoice",
    "check",
    "load_provider",
    "new_line",
    "parse_tax_config",
]
