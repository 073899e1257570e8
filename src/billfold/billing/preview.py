"""The upcoming invoice: what a customer's next invoice holds if the current period
ended now. Rated by the same code as period close (`close.arrears`, the subscription's
charges, the pending lines), so a preview and the invoice never disagree on a price.
Nothing is written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.billing.close import advance_of, arrears, rating_of
from billfold.catalog.catalog import Catalog
from billfold.customers import service as customers
from billfold.invoicing import pending
from billfold.invoicing.document import Line, LineKind, build_invoice, new_line
from billfold.invoicing.records import Charge, Invoicing, buyer_of
from billfold.invoicing.service import seller_of
from billfold.invoicing.taxes import apply_quote
from billfold.kit.context import Context
from billfold.kit.errors import NotFound
from billfold.subscriptions import charges
from billfold.subscriptions import repository as subscription_rows
from billfold.subscriptions.service import price_of
from billfold.subscriptions.status import SubscriptionStatus as S


class NoUpcomingInvoice(NotFound):
    code = "no_upcoming_invoice"
    title = "The customer has no subscription that Billfold bills"


@dataclass(frozen=True)
class Upcoming:
    customer: str
    subscription_id: str
    currency: str
    period_start: datetime
    period_end: datetime  # when the invoice is made
    lines: tuple[Line, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int


async def upcoming(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    external_id: str,
    invoicing: Invoicing,
) -> Upcoming:
    """The next invoice of the customer's live subscription billed by invoice: the usage
    of the current period so far, its minimum true-up, the pending lines, and the next
    period's fee (after a scheduled change), taxed for the customer as they are now."""
    customer = await customers.get(session, ctx.tenant_id, external_id)
    row = await subscription_rows.live_of(session, ctx.tenant_id, customer.id)
    if row is None or row.currency is None or row.current_period_ends_at is None:
        raise NoUpcomingInvoice(
            f"customer {external_id!r} has no live subscription billed by invoice"
        )
    start, end = row.current_period_start, row.current_period_ends_at
    version = catalog.versions[row.plan_version_id]
    found: list[Charge] = []
    rating = rating_of(row, version, price_of(version, row.currency, row.interval), start, end)
    if rating is not None:
        found += await arrears(session, catalog, ctx.tenant_id, rating, start, min(ctx.now, end))
    found += await pending.peek(session, row.id)
    if not row.cancel_at_period_end and S(row.status) is not S.PAUSED:
        scheduled = row.scheduled_change or {}
        upcoming_version = catalog.versions.get(scheduled.get("plan_version_id", ""), version)
        quantity = Decimal(scheduled["quantity"]) if scheduled else row.quantity
        _next_end, advance = advance_of(row, upcoming_version, quantity, end)
        if advance is not None:
            found.append(advance)
    off = charges.discount(row.discount, found)
    if off is not None:
        found.append(off)
    lines = [
        new_line(
            c.description,
            LineKind(c.kind),
            c.quantity,
            c.amount_precise,
            row.currency,
            period=(c.period_start, c.period_end) if c.period_start and c.period_end else None,
        )
        for c in found
    ]
    seller = await seller_of(session, ctx.tenant_id, invoicing)
    buyer = buyer_of(customer)
    quote = invoicing.taxes.quote(seller, buyer, row.currency, lines)
    invoice = build_invoice(  # its totals, summed and checked as an invoice's are
        currency=row.currency,
        locale=customer.billing.locale or invoicing.locale,
        seller=seller,
        buyer=buyer,
        period=(start, end),
        lines=apply_quote(lines, quote),
        tax_note=quote.note,
    )
    return Upcoming(
        customer=external_id,
        subscription_id=row.id,
        currency=row.currency,
        period_start=start,
        period_end=end,
        lines=invoice.lines,
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
    )
