"""Pricing: what a price charges for a usage, prorations, and billing dates. Pure: no
database, no clock, no rounding (amounts stay exact `Decimal`s in major units until an
invoice line rounds them once, `billfold.money.round_money`).

The one copy of the pricing logic, used by invoices, previews and the portal alike:

- `rate(price, usage)`: a price mapping exactly as the plans file writes it, and a quantity
  (for `percentage`, the ordered list of event amounts);
- `prorate(amount, period_start, period_end, start, end, day_count="actual_days")`;
- `billing_dates(anchor, interval, count, interval_count=1)`.

Where peers (Stripe, Lago) differ, what Billfold does is written in docs/pricing.md.
"""

from billfold.pricing.dates import billing_dates, prorate
from billfold.pricing.models import PriceError, parse_price, rate

__all__ = ["PriceError", "billing_dates", "parse_price", "prorate", "rate"]
