"""Invoicing: the invoice as a value. Pure: no database, no
HTTP, no clock (period close and the API build on it).

- `document`: `Party`, `Line` (`new_line` rounds once), `Payment`, `Invoice`,
  `build_invoice` (totals from the rounded lines) and `check` (the invariants);
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

__all__ = [
    "Invoice",
    "InvoiceStatus",
    "Line",
    "LineKind",
    "Party",
    "Payment",
    "build_invoice",
    "check",
    "new_line",
]
