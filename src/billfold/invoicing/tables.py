"""Invoices, their lines, and each tenant's invoice numbers.

Money columns are integer minor units (`*_minor`, BIGINT) of the invoice's currency; a
line keeps its precise amount (`amount_precise`, exact) beside the one rounding of it.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    false,
    text,
)

from billfold.kit.db import Exact, JSONDocument, UTCDateTime, metadata

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("customer_id", String(40), ForeignKey("customers.id"), nullable=False),
    Column("subscription_id", String(40), ForeignKey("subscriptions.id"), nullable=True),
    Column("number", String(40), nullable=True),  # given at finalization, gapless
    Column("status", String(16), nullable=False),  # draft, open, paid, void, uncollectible
    Column("reason", String(24), nullable=False),  # subscription_create, _cycle, _end, manual
    Column("currency", String(3), nullable=False),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("tax_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("paid_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("credited_minor", BigInteger, nullable=False, server_default=text("0")),
    # What credit notes gave back of what was paid (a refund, or credit to the wallet):
    # what is due is total - paid - credited + refunded.
    Column("refunded_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("tax_note", String(500), nullable=True),
    Column("locale", String(35), nullable=True),  # how its documents are written
    # How the draft's usage was rated (plan version, price, quantity, the period's
    # recurring amount), so finalization rates late usage the same way; none: nothing
    # to re-rate.
    Column("rating", JSONDocument, nullable=True),
    # The seller and buyer as they were at finalization: a finalized invoice never changes.
    Column("seller", JSONDocument, nullable=True),
    Column("buyer", JSONDocument, nullable=True),
    Column("finalize_at", UTCDateTime, nullable=False),  # the end of the draft's grace
    Column("finalized_at", UTCDateTime, nullable=True),
    # When its finalization was posted to the ledger (receivable, revenue, tax payable);
    # none for a draft, or for an invoice finalized before invoices posted (posted the
    # first time it is paid, credited or voided: decision 0043).
    Column("posted_at", UTCDateTime, nullable=True),
    Column("due_at", UTCDateTime, nullable=True),
    Column("paid_at", UTCDateTime, nullable=True),
    Column("voided_at", UTCDateTime, nullable=True),
    Column("void_reason", String(500), nullable=True),
    Column("uncollectible_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The backstop of period close: one invoice per subscription and period, whatever
    # runs twice or dies half-way.
    UniqueConstraint("subscription_id", "period_end", name="uq_invoices_subscription_period"),
    UniqueConstraint("tenant_id", "number", name="uq_invoices_number"),
    Index("ix_invoices_tenant_status", "tenant_id", "status", "finalize_at"),
    Index("ix_invoices_customer", "customer_id", "created_at"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("invoice_id", String(40), ForeignKey("invoices.id"), nullable=False),
    Column("position", Integer, nullable=False),
    # recurring, usage, proration, minimum, discount, credit
    Column("kind", String(16), nullable=False),
    Column("description", String(500), nullable=False),
    Column("meter", String(100), nullable=True),
    Column("quantity", Exact, nullable=False),
    Column("price", JSONDocument, nullable=True),  # the price mapping it was rated with
    Column("period_start", UTCDateTime, nullable=True),
    Column("period_end", UTCDateTime, nullable=True),
    Column("amount_precise", Exact, nullable=False),  # major units, never rounded
    Column("amount_minor", BigInteger, nullable=False),  # rounded once, half up
    Column("tax_rate", Exact, nullable=False),  # percent
    Column("tax_minor", BigInteger, nullable=False),
    Column("tax_name", String(40), nullable=True),  # "VAT", "Sales tax"
    # amount_minor includes the tax (inclusive pricing): the net is amount - tax.
    Column("tax_included", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("invoice_id", "position"),
)

# Charges and credits waiting for the subscription's next invoice: prorations of a change
# made mid-period (Stripe's pending invoice items). Period close moves them onto the
# invoice in the transaction that makes it, and deletes them here.
pending_lines = Table(
    "pending_lines",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("subscription_id", String(40), ForeignKey("subscriptions.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("description", String(500), nullable=False),
    Column("quantity", Exact, nullable=False),
    Column("price", JSONDocument, nullable=True),
    Column("period_start", UTCDateTime, nullable=True),
    Column("period_end", UTCDateTime, nullable=True),
    Column("amount_precise", Exact, nullable=False),  # negative for a credit
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_pending_lines_subscription", "subscription_id"),
)

# Each tenant's next invoice number per series and year, taken under a row lock in the
# transaction that finalizes, so numbers are gapless: a rolled-back finalization gives its
# number back. Series `live`, and `test` for test-clock customers, which never take a
# number of the real series.
invoice_numbers = Table(
    "invoice_numbers",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("series", String(8), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("last", BigInteger, nullable=False),
)

# Payments recorded against an invoice: manual ones now (an admin), a provider's later.
invoice_payments = Table(
    "invoice_payments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("invoice_id", String(40), ForeignKey("invoices.id"), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("method", String(40), nullable=False),  # manual, bank_transfer, cash, ...
    Column("reference", String(255), nullable=True),
    Column("paid_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_invoice_payments_invoice", "invoice_id"),
)

# Credit notes: what is credited against a finalized invoice, line by line, with a reason.
# They reduce what is due and never edit the invoice. Numbered gaplessly like invoices,
# in series of their own (`CN-2026-000001`).
credit_notes = Table(
    "credit_notes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("invoice_id", String(40), ForeignKey("invoices.id"), nullable=False),
    Column("number", String(48), nullable=False),
    Column("reason", String(500), nullable=False),
    # [{position, description, amount_minor, tax_minor}]: per invoice line, tax included
    Column("lines", JSONDocument, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("tax_minor", BigInteger, nullable=False),
    # The part of the credit beyond what was due (money paid, given back) and where it
    # went: `refund` (owed until a refund is marked paid) or `wallet`.
    Column("refund_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("refund_to", String(16), nullable=True),
    Column("refund_paid_at", UTCDateTime, nullable=True),
    Column("refund_reference", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "number", name="uq_credit_notes_number"),
    Index("ix_credit_notes_invoice", "invoice_id"),
)
